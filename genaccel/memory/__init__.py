"""Memory: `estimate` (the peak a run will need, before it runs) and `offload` (where the pipeline's
weights live: diffusers' model, group and sequential offloading, VAE tiling)."""
