"""compile, quant and a sparse kernel, alone and stacked, on a Wan2.1-1.3B-sized transformer pass (GPU check).

    python benchmarks/gpu_systems.py --out-dir DIR          # one CUDA GPU (H100/H200), under 5 minutes
    python benchmarks/gpu_systems.py --toy --out-dir DIR    # CPU, a minute: the same code at a toy size

Everything is genaccel's own: the `compile` and `quant` accelerators installed on the transformer as the
acceleration installs them (compile's innermost bodies, then its boundaries; quant's `apply_pipeline`), and
the `svg` sparse kernel through the attention seam. Configurations, each on a fresh copy of the weights:

  eager              diffusers' WanTransformer3DModel as it is
  compile            each block compiled (regional, one graph shared by the 30 blocks)
  int8+compile       torchao int8 weights and dynamic int8 activations, compiled
  fp8+compile        torchao fp8 weights and dynamic fp8 activations (compute capability 8.9+), compiled
  svg                sparse attention at block density 0.25 (its own compiled FlexAttention)
  svg+fp8+compile    all three stacked

A random-weight `WanTransformer3DModel` (Wan2.1-T2V-1.3B config), bf16, latents (1, 16, 21, 60, 104)
-> 32,760 tokens, text (1, 512, 4096), timestep 500. Median of a few passes after a warm-up that absorbs
compilation (reported apart as `first_call_s`); the relative L2 difference of each output from eager is a
sanity figure, not quality. Writes DIR/gpu_systems.json after every configuration and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import gpu_attention as ga  # noqa: E402  (same folder: CUDA-event timing)
from gpu_wan_pass import TOY, WAN_1_3B, build_model  # noqa: E402

from genaccel.accelerators.compilation import Compile, CompileConfig, compile_seconds  # noqa: E402
from genaccel.accelerators.quant import Quant, QuantConfig, device_refusal  # noqa: E402
from genaccel.accelerators.runtime import Runtime  # noqa: E402
from genaccel.accelerators.svg import SpatialTemporal  # noqa: E402
from genaccel.attention import SparseAttentionKernel, install_seam, remove_seam  # noqa: E402
from genaccel.pipelines.families import WAN  # noqa: E402

T0 = time.perf_counter()
CONFIGS = ("eager", "compile", "int8+compile", "fp8+compile", "svg", "svg+fp8+compile")


def log(*args) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *args, flush=True)


def install(model, name: str, toy: bool):
    """Put configuration `name` on `model` as genaccel's acceleration would; returns what removes it."""
    parts = set(name.split("+"))
    undo = []
    for quant in ("int8", "fp8"):
        if quant in parts:
            accelerator = Quant(QuantConfig(weights=quant, activations=quant), WAN, Runtime())
            accelerator.apply_pipeline(None, [model])
            undo.append(accelerator.uninstall)
    compiler = None
    if "compile" in parts:
        compiler = Compile(CompileConfig(), WAN, Runtime())
        compiler.install_inner(model)
    if "svg" in parts:
        kernel = SparseAttentionKernel(
            SpatialTemporal(0.5 if toy else 0.25), dense_layers=0, dense_steps=0, block_size=16 if toy else 128
        )
        registered = install_seam(model, WAN, kernel)
        undo.append(lambda: remove_seam(registered))
    if compiler is not None:
        compiler.install_outer(model, [compiler])
        undo.append(compiler.uninstall)
    return lambda: [step() for step in reversed(undo)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--toy", action="store_true", help="CPU: 2-layer toy model at a small grid")
    ap.add_argument("--iters", type=int, default=5, help="timed passes per configuration")
    ap.add_argument("--only", default="", help=f"comma-separated configurations (default: all of {', '.join(CONFIGS)})")
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
    path = os.path.join(args.out_dir, "gpu_systems_toy.json" if args.toy else "gpu_systems.json")

    def save():
        os.makedirs(args.out_dir, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1)

    cfg = TOY if args.toy else WAN_1_3B
    dtype = torch.float32 if args.toy else torch.bfloat16
    lat_shape = (1, 16, 4, 8, 12) if args.toy else (1, 16, 21, 60, 104)
    base = build_model(cfg, device, dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    lat = torch.randn(lat_shape, generator=gen, device=device).to(dtype)
    txt = torch.randn(1, 512 if not args.toy else 16, cfg["text_dim"], generator=gen, device=device).to(dtype)
    ts = torch.tensor([500], device=device)
    res.update(latents=list(lat_shape), dtype=str(dtype), layers=cfg["num_layers"])
    log(f"model built on {res['device']}, latents {lat_shape}")

    only = {s.strip() for s in args.only.split(",") if s.strip()} or set(CONFIGS)
    times, diffs, first_calls, compiling = {}, {}, {}, {}
    ref = None
    with torch.no_grad():
        for name in CONFIGS:
            if name not in only and name != "eager":
                continue
            refusal = device_refusal("fp8", "fp8", device) if "fp8" in name else None
            if refusal:
                times[name], diffs[name] = None, f"skipped: {refusal}"
                log(f"{name}: {diffs[name]}")
                continue
            model = copy.deepcopy(base)  # quantization replaces weights: every configuration starts fresh

            def fwd(model=model):
                return model(lat, ts, txt, return_dict=False)[0]

            try:
                remove = install(model, name, args.toy)
                before = compile_seconds()
                t = time.perf_counter()
                out = fwd().float()
                ga.sync(device)
                first_calls[name] = round(time.perf_counter() - t, 1)
                compiling[name] = round(compile_seconds() - before, 1)
                times[name] = round(ga.time_ms(fwd, 1, args.iters, device), 2)
                ref = out if ref is None else ref
                diffs[name] = round(((out - ref).norm() / ref.norm()).item(), 4)
                speed = f" ({times['eager'] / times[name]:.2f}x)" if times.get("eager") else ""
                log(f"{name}: {times[name]} ms{speed}, first call {first_calls[name]} s, rel L2 vs eager {diffs[name]}")
                remove()
            except Exception as exc:  # record and go on: one failing configuration must not cost the others
                times[name] = None
                diffs[name] = f"{type(exc).__name__}: {exc}"[:300]
                log(f"{name}: FAILED {diffs[name]}")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            res.update(times_ms=times, rel_l2_vs_eager=diffs, first_call_s=first_calls, compile_s=compiling)
            save()
    lines = [
        "| configuration | pass ms | speedup vs eager | first call s | rel. L2 vs eager |",
        "|---|---|---|---|---|",
    ]
    for name, ms in times.items():
        speed = f"{times['eager'] / ms:.2f}x" if ms and times.get("eager") else "-"
        lines.append(f"| {name} | {ms if ms else '-'} | {speed} | {first_calls.get(name, '-')} | {diffs.get(name)} |")
    res["table"] = "\n".join(lines)
    res["total_s"] = round(time.perf_counter() - T0, 1)
    save()
    print(res["table"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
