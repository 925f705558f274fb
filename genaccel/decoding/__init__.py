"""Decoding latents into frames without the full VAE: TAEHV's light decoder (`taehv.py`, the network) and its
wiring to a pipeline (`light.py`: loading, whole clips, streams, previews)."""
