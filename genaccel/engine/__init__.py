"""The engine: what genaccel adds to a loaded pipeline and takes off again.

`acceleration` installs a resolved spec's accelerators as diffusers hooks on each denoiser (with the
counters and the attention seam), owns them in one ledger and removes them exactly; `distributed` runs
one job on several processes (accelerate launch, context parallelism). Above: `genaccel.generation`, the
request path. Below: `genaccel.accelerators`, the techniques themselves.
"""
