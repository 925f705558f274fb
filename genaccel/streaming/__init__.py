"""Streamed, autoregressive generation: a rolling KV cache, chunk-wise decoding, and the stream loop."""
