"""Kernels of streamed, autoregressive generation: the rolling KV cache (`kv_cache`), the prompt's
cross-attention keys and values computed once (`prompt_kv`), and chunk-wise decoding (`decode`). The
stream loop itself is `genaccel.generation.stream`; the `kvcache` accelerator wires these in."""
