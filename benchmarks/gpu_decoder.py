"""The light decoder against Wan 2.1's VAE decoder at 480p (GPU check): time and peak memory of a decode.

    python benchmarks/gpu_decoder.py --out-dir DIR          # one CUDA GPU, about a minute
    python benchmarks/gpu_decoder.py --toy --out-dir DIR    # CPU, seconds: the same code at a toy size

Random weights at the real geometry (speed and memory only, not quality): diffusers' `AutoencoderKLWan` with
its default config (Wan 2.1's VAE) decoding latents (1, 16, 21, 60, 104) -> 81 frames of 480x832, against
genaccel's `TAEHVDecoder` in taew2_1's shape (`TAEHVConfig()`) on the same latents, whole clip, in chunks of 3
latent frames with its memory carried (a stream), and its preview form (temporal upsampling off). bf16. Median
of a few decodes after a warm-up (CUDA events); peak memory from torch.cuda.max_memory_allocated. Writes
DIR/gpu_decoder.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def _timed(fn, iters: int, cuda: bool) -> tuple[float, int]:
    fn()  # warm-up
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return statistics.median(times), peak


def main(argv=None) -> int:
    from diffusers import AutoencoderKLWan

    from genaccel.decoding.light import LightDecoder
    from genaccel.decoding.taehv import DecoderMemory, TAEHVConfig, TAEHVDecoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--toy", action="store_true", help="CPU: a small grid and a narrow VAE")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.toy
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    if args.toy:
        vae = AutoencoderKLWan(base_dim=16, z_dim=16)
        latents = torch.randn(1, 16, 3, 8, 8)
    else:
        vae = AutoencoderKLWan()  # Wan 2.1's VAE config
        latents = torch.randn(1, 16, 21, 60, 104)
    vae = vae.to(device, dtype).eval()
    light = LightDecoder(TAEHVDecoder(TAEHVConfig()).to(device, dtype))
    z = latents.to(device, dtype)
    ntchw = z.transpose(1, 2)

    def full():
        with torch.no_grad():
            vae.decode(z)

    def whole():
        with torch.no_grad():
            light.net(ntchw)

    def chunks():
        memory = DecoderMemory()
        with torch.no_grad():
            for start in range(0, ntchw.shape[1], 3):
                light.net(ntchw[:, start : start + 3], memory)

    preview_net = None

    def preview():
        nonlocal preview_net
        from genaccel.decoding.light import _without_time_upscale

        if preview_net is None:
            preview_net = _without_time_upscale(light.net)
        with torch.no_grad():
            preview_net(ntchw)

    rows = {}
    for name, fn in (("vae", full), ("light", whole), ("light_chunks_of_3", chunks), ("light_preview", preview)):
        seconds, peak = _timed(fn, args.iters, cuda)
        rows[name] = {"seconds": round(seconds, 4), "peak_bytes": peak}
        print(name, rows[name], flush=True)
    for name in ("light", "light_chunks_of_3", "light_preview"):
        rows[name]["speedup_vs_vae"] = round(rows["vae"]["seconds"] / rows[name]["seconds"], 2)
    report = {
        "command": "python benchmarks/gpu_decoder.py" + (" --toy" if args.toy else ""),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "latents": list(latents.shape),
        "dtype": str(dtype),
        "rows": rows,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "gpu_decoder.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("| decode | seconds | peak memory | speedup vs VAE |\n|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['seconds']} | {row['peak_bytes'] / 2**30:.2f} GiB | {row.get('speedup_vs_vae', 1.0)}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
