"""Sparse attention on this CPU: the attention share of the embedded model's pass, and a kernel microbenchmark.

    python benchmarks/sparse_attention.py --out benchmarks/results/sparse-attention

1. Attention share (`--share`): the embedded model makes a few denoising steps at each setting with its
   self-attention routed through the attention seam to a timing dense kernel; the share of the
   transformer pass spent in the attention computation itself is the Amdahl limit of any sparse method.
2. Microbenchmark (`--micro`): at the embedded model's head shape (6 heads x 32), at the long setting's
   token grid (9x16x16 = 2,304 tokens) and two larger ones (8x32x32 = 8,192; 16x32x32 = 16,384), each
   method's kernel (pattern fitted to densities 0.5, 0.25, 0.1; top-k at that threshold on random inputs)
   against dense SDPA: median time per call, the density that ran, speedup and its ratio to 1/density.

With `--device cuda --wan` the microbenchmark runs the same kernels at Wan2.1-1.3B 480p shapes instead
(12 heads x 128, 21x30x52 = 32,760 tokens, bf16): the GPU check of the library's own kernels.

    python benchmarks/sparse_attention.py --micro --device cuda --wan --densities 0.25 --out DIR

Writes DIR/results.json and DIR/summary.md. Run alone: two torch processes slow each other down.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genaccel.accelerators.radial import Radial
from genaccel.accelerators.sta import SlidingTile
from genaccel.accelerators.svg import SpatialTemporal
from genaccel.accelerators.topk import TopK
from genaccel.attention import AttentionContext, SparseAttentionKernel, dense_kernel, install_seam, remove_seam
from genaccel.attention.flex import compile_failure

GRIDS = {2304: (9, 16, 16), 8192: (8, 32, 32), 16384: (16, 32, 32), 32760: (21, 30, 52)}
HEADS, HEAD_DIM = 6, 32  # the embedded model's attention
WAN_HEADS, WAN_HEAD_DIM = 12, 128  # Wan2.1-1.3B


def _median_time(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up: compiles, builds and caches the mask
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ attention share
class _TimedDense:
    def __init__(self):
        self.seconds = 0.0

    def __call__(self, q, k, v, context):
        start = time.perf_counter()
        out = dense_kernel(q, k, v, context)
        self.seconds += time.perf_counter() - start
        return out


def attention_share(setting: str, steps: int = 4) -> dict:
    from genaccel.generation.load import load_pipeline
    from genaccel.models.facts import model_defaults
    from genaccel.pipelines.families import family_of

    pipe = load_pipeline()
    family = family_of(pipe)
    settings = model_defaults(pipe, setting)
    kernel = _TimedDense()
    registered = []
    for _, denoiser in family.denoiser_modules(pipe):
        registered += install_seam(denoiser, family, kernel)
    passes = []

    def pre(module, args, kwargs):
        passes.append([time.perf_counter(), kernel.seconds])

    def post(module, args, kwargs, output):
        passes[-1] = [time.perf_counter() - passes[-1][0], kernel.seconds - passes[-1][1]]

    handles = [
        pipe.transformer.register_forward_pre_hook(pre, with_kwargs=True),
        pipe.transformer.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        with torch.inference_mode():
            pipe(
                prompt="a red circle moving left on a black background",
                height=settings["height"],
                width=settings["width"],
                num_frames=settings["num_frames"],
                num_inference_steps=steps,
                guidance_scale=settings["guidance_scale"],
                output_type="latent",
                **settings.get("extra", {}),
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        for handle in handles:
            handle.remove()
        remove_seam(registered)
    measured = passes[2:]  # the first step's two passes warm up
    pass_s = sum(p for p, _ in measured)
    attention_s = sum(a for _, a in measured)
    return {
        "setting": setting,
        "size": f"{settings['width']}x{settings['height']}x{settings['num_frames']}",
        "passes": len(measured),
        "pass_ms": 1000 * pass_s / len(measured),
        "attention_ms": 1000 * attention_s / len(measured),
        "share": attention_s / pass_s,
    }


# ------------------------------------------------------------------------------------------ microbenchmark
def _patterns(density: float) -> dict:
    return {
        "radial": Radial(density),
        "sta": SlidingTile(density, (2, 8, 8)),
        "svg": SpatialTemporal(density),
        "topk": TopK(density),
    }


def micro(
    tokens: int,
    densities,
    repeat: int,
    heads: int = HEADS,
    head_dim: int = HEAD_DIM,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[dict]:
    grid = GRIDS[tokens]
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=g).to(device, dtype) for _ in range(3))
    context = AttentionContext(
        video=(0, tokens), grid=grid, axes=("f", "h", "w"), layer=0, name="bench", step=0, branch="cond"
    )
    rows = []
    with torch.inference_mode():
        dense = _median_time(lambda: F.scaled_dot_product_attention(q, k, v), repeat, device)
        rows.append(
            {
                "tokens": tokens,
                "grid": grid,
                "method": "dense SDPA",
                "target": 1.0,
                "density": 1.0,
                "ms": 1000 * dense,
                "speedup": 1.0,
                "of_ideal": 1.0,
            }
        )
        print(f"{tokens} dense {1000 * dense:.1f} ms", file=sys.stderr, flush=True)
        for density in densities:
            for name, pattern in _patterns(density).items():
                kernel = SparseAttentionKernel(pattern, dense_layers=0, dense_steps=0)
                seconds = _median_time(lambda: kernel(q, k, v, context), repeat, device)
                ran = kernel.stats()["sparse_density"] or 1.0
                rows.append(
                    {
                        "tokens": tokens,
                        "grid": grid,
                        "method": name,
                        "target": density,
                        "density": ran,
                        "ms": 1000 * seconds,
                        "speedup": dense / seconds,
                        "of_ideal": dense / seconds * ran,
                        "path": kernel.stats()["path"],
                    }
                )
                print(
                    f"{tokens} {name} d={density} ran {ran:.3f}: {1000 * seconds:.1f} ms ({dense / seconds:.2f}x)",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


# ------------------------------------------------------------------------------------------ report
def summary(results: dict) -> str:
    lines = []
    if results.get("share"):
        lines += [
            "| setting | size | pass ms | self-attention ms | attention share | pass speedup limit at "
            "density 0.25 (ideal kernel) |",
            "|---|---|---|---|---|---|",
        ]
        for r in results["share"]:
            limit = 1 / ((1 - r["share"]) + r["share"] * 0.25)
            lines.append(
                f"| {r['setting']} | {r['size']} | {r['pass_ms']:.0f} | {r['attention_ms']:.0f} | "
                f"{100 * r['share']:.1f}% | {limit:.2f}x |"
            )
        lines.append("")
    if results.get("micro"):
        lines += [
            "| tokens (grid) | method | target density | density run | ms per call | speedup vs SDPA | "
            "of ideal 1/density |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["micro"]:
            grid = "x".join(map(str, r["grid"]))
            lines.append(
                f"| {r['tokens']:,} ({grid}) | {r['method']} | {r['target']:.2f} | {r['density']:.3f} | "
                f"{r['ms']:.1f} | {r['speedup']:.2f}x | {100 * r['of_ideal']:.0f}% |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and summary.md")
    parser.add_argument("--share", action="store_true", help="only the attention share")
    parser.add_argument("--micro", action="store_true", help="only the microbenchmark")
    parser.add_argument("--sizes", default="2304,8192,16384", help=f"token counts among {list(GRIDS)}")
    parser.add_argument("--densities", default="0.5,0.25,0.1")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per configuration (median)")
    parser.add_argument("--device", default="cpu", help="device of the microbenchmark (cpu, cuda)")
    parser.add_argument(
        "--wan",
        action="store_true",
        help="microbenchmark at Wan2.1-1.3B 480p shapes: 12 heads x 128, 32,760 tokens, bf16",
    )
    args = parser.parse_args(argv)
    both = not (args.share or args.micro)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.share or both:
        results["share"] = [attention_share(s) for s in ("default", "long")]
    if args.micro or both:
        densities = [float(d) for d in args.densities.split(",")]
        if args.wan:
            results["micro"] = micro(
                32760, densities, args.repeat, WAN_HEADS, WAN_HEAD_DIM, args.device, torch.bfloat16
            )
        else:
            sizes = [int(s) for s in args.sizes.split(",")]
            if not set(sizes) <= set(GRIDS):
                parser.error(f"--sizes must be among {', '.join(map(str, GRIDS))}")
            results["micro"] = [
                row for size in sizes for row in micro(size, densities, args.repeat, device=args.device)
            ]
    results["compile_failed"] = compile_failure()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "summary.md").write_text(summary(results))
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
