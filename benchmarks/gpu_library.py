"""The library's own attention seam and kernels on a Wan2.1-1.3B-sized transformer pass (GPU check).

    python benchmarks/gpu_library.py --out-dir DIR          # one CUDA GPU, about 3 minutes
    python benchmarks/gpu_library.py --toy --out-dir DIR    # CPU, seconds: the same code at a toy size

Unlike `gpu_wan_pass.py` (hand-written processor and masks), everything here is genaccel's: the seam is
installed with `genaccel.attention.install_seam` and the Wan family adapter, and each configuration is one
of the library's seam kernels:

  dense      diffusers' own WanAttnProcessor (no seam)
  seam       the seam with `dense_kernel` (torch SDPA): the seam's own cost
  radial / sta / svg   `SparseAttentionKernel(pattern)` at block density 0.25, dense layers and steps 0
  asymrnr    `AsymmetricReductionKernel` (q/kv ratios 0.3 and 0.5), matching on every call (interval 0)
             and reusing the first call's matches (the steady state between re-matching steps)
  tome       ToMe token merging around every block's self-attention (ratio 0.3, 0.5; the feed-forward too),
             matching on every call or reusing the first call's matches

A random-weight `WanTransformer3DModel` (Wan2.1-T2V-1.3B config), bf16, latents (1, 16, 21, 60, 104)
-> 21x30x52 = 32,760 tokens, text (1, 512, 4096), timestep 500. Median of a few passes after warm-up (CUDA
events); the difference of each output from the dense pass (relative L2) is a sanity figure, not quality.
Writes DIR/gpu_library.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
from diffusers.hooks import HookRegistry

sys.path.insert(0, os.path.dirname(__file__))
import gpu_attention as ga  # noqa: E402  (same folder: CUDA-event timing)
from gpu_wan_pass import TOY, WAN_1_3B, build_model  # noqa: E402

from genaccel.accelerators.radial import Radial  # noqa: E402
from genaccel.accelerators.sta import SlidingTile  # noqa: E402
from genaccel.accelerators.svg import SpatialTemporal  # noqa: E402
from genaccel.attention import SparseAttentionKernel, dense_kernel, install_seam, remove_seam  # noqa: E402
from genaccel.attention.flex import compile_failure  # noqa: E402
from genaccel.pipelines.families import WAN  # noqa: E402
from genaccel.tokens.reduce import AsymmetricReductionKernel  # noqa: E402

T0 = time.perf_counter()


def log(*args) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *args, flush=True)


def kernels(toy: bool) -> dict:
    """name -> factory of a fresh seam kernel."""
    density = 0.5 if toy else 0.25
    sparse = lambda pattern: (
        lambda: SparseAttentionKernel(pattern, dense_layers=0, dense_steps=0, block_size=16 if toy else 128)
    )
    made = {
        "seam": lambda: dense_kernel,
        f"radial {density}": sparse(Radial(density)),
        f"sta {density}": sparse(SlidingTile(density, (1, 2, 2) if toy else (2, 8, 8))),
        f"svg {density}": sparse(SpatialTemporal(density)),
    }
    for ratio in (0.3, 0.5):
        made[f"asymrnr {ratio} match"] = lambda r=ratio: AsymmetricReductionKernel(q_ratio=r, kv_ratio=r, interval=0)
        made[f"asymrnr {ratio} reuse"] = lambda r=ratio: AsymmetricReductionKernel(
            q_ratio=r, kv_ratio=r, interval=10**9
        )
    return made


def install(model, kernel):
    """Register the seam with `kernel` on every self-attention layer; returns (registered hooks, kernel)."""
    return install_seam(model, WAN, kernel), kernel


def uninstall(handle) -> None:
    remove_seam(handle[0])


def tome_configs(model) -> dict:
    """ToMe token merging around every block's self-attention (and feed-forward): name -> (apply, remove)."""
    from genaccel.tokens.tome import MergeSchedule, MergeStats, token_merge_hooks

    def apply(ratio, ffn, interval):
        stats = MergeStats()
        hooks = token_merge_hooks(
            model, WAN, MergeSchedule(ratio=ratio, interval=interval, dense_steps=0), stats, ffn=ffn
        )
        for module, name, hook in hooks:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
        return [(module, name) for module, name, _ in hooks], stats

    out = {}
    for ratio, ffn, interval, label in (
        (0.3, False, 10**9, "reuse"),
        (0.5, False, 0, "match"),
        (0.5, False, 10**9, "reuse"),
        (0.5, True, 10**9, "reuse+ffn"),
    ):
        out[f"tome {ratio} {label}"] = (lambda r=ratio, f=ffn, i=interval: apply(r, f, i), uninstall)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--toy", action="store_true", help="CPU: 2-layer toy model at a small grid")
    ap.add_argument("--iters", type=int, default=5, help="timed passes per configuration")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.toy else "cpu")
    if device.type != "cuda" and not args.toy:
        print("no CUDA device: use --toy on CPU", flush=True)
        return 1
    res = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        command=" ".join(["python"] + sys.argv),
    )
    path = os.path.join(args.out_dir, "gpu_library_toy.json" if args.toy else "gpu_library.json")

    def save():
        os.makedirs(args.out_dir, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1)

    cfg = TOY if args.toy else WAN_1_3B
    dtype = torch.float32 if args.toy else torch.bfloat16
    lat_shape = (1, 16, 4, 8, 12) if args.toy else (1, 16, 21, 60, 104)
    model = build_model(cfg, device, dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    lat = torch.randn(lat_shape, generator=gen, device=device).to(dtype)
    txt = torch.randn(1, 512 if not args.toy else 16, cfg["text_dim"], generator=gen, device=device).to(dtype)
    ts = torch.tensor([500], device=device)
    res.update(latents=list(lat_shape), dtype=str(dtype), layers=cfg["num_layers"])
    log(f"model built on {res['device']}, latents {lat_shape}")

    def fwd():
        return model(lat, ts, txt, return_dict=False)[0]

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    times, diffs, stats = {}, {}, {}
    with torch.no_grad():
        ref = fwd().float()
        times["dense"] = round(ga.time_ms(fwd, 1, args.iters, device), 2)
        log(f"dense: {times['dense']} ms")
        configs = {
            name: (lambda make=make: install(model, make()), uninstall) for name, make in kernels(args.toy).items()
        }
        configs.update(tome_configs(model))
        for name, (apply, remove) in configs.items():
            if only and name not in only:
                continue
            handle = apply()
            try:
                t = time.perf_counter()
                out = fwd().float()
                ga.sync(device)
                first = time.perf_counter() - t
                times[name] = round(ga.time_ms(fwd, 1, args.iters, device), 2)
                diffs[name] = round(((out - ref).norm() / ref.norm()).item(), 4)
                log(
                    f"{name}: {times[name]} ms ({times['dense'] / times[name]:.2f}x), first call {first:.1f} s, "
                    f"rel L2 vs dense {diffs[name]}"
                )
            except Exception as exc:  # record and go on: one failing configuration must not cost the others
                times[name] = None
                diffs[name] = f"{type(exc).__name__}: {exc}"[:300]
                log(f"{name}: FAILED {diffs[name]}")
            finally:
                owner = handle[1]  # the kernel, or tome's MergeStats
                report = getattr(owner, "stats", None) if not hasattr(owner, "summary") else owner.summary
                if callable(report):
                    stats[name] = {k: v for k, v in report().items() if k not in ("tokens", "by_layer", "by_step")}
                remove(handle)
            res.update(times_ms=times, rel_l2_vs_dense=diffs, stats=stats, compile_failed=compile_failure())
            save()
    lines = ["| configuration | pass ms | speedup vs dense | rel. L2 vs dense |", "|---|---|---|---|"]
    for name, ms in times.items():
        speed = f"{times['dense'] / ms:.2f}x" if ms else "failed"
        lines.append(f"| {name} | {ms if ms else '-'} | {speed} | {diffs.get(name, 0.0)} |")
    res["table"] = "\n".join(lines)
    res["total_s"] = round(time.perf_counter() - T0, 1)
    save()
    print(res["table"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
