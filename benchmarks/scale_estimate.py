"""ESTIMATED time and memory of Wan2.1-1.3B and -14B at 480p and 720p on 1, 2, 4 and 8 GPUs: not measured.

    python benchmarks/scale_estimate.py --summary benchmarks/results/presets-default/summary.csv \
        --out benchmarks/results/scale-estimate.md

No GPU cluster is available to this project. For each model and size this derives, on paper:
- memory per GPU: genaccel's own estimate (`genaccel.memory.estimate`, what `genaccel generate --dry-run`
  prints) of the model built from its published configuration on the meta device (no weights), with
  no offloading and with `--offload model`; context parallelism divides the activations by N, not the
  weights, and every process decodes the whole video;
- time of one video on one GPU: FLOPs counted by PyTorch's FlopCounterMode on diffusers' own modules
  (benchmarks/gpu_estimate.py) at an assumed 45% of an H100's bf16 peak;
- data-parallel batch on N GPUs (`accelerate launch -m genaccel batch`): the same time per video, N
  videos at once;
- context parallel on N GPUs (`--context-parallel ulysses=N`, ring where N does not divide the heads):
  the transformer's compute divided by N plus its communication (Ulysses: four all-to-alls of the local
  q, k, v and output per attention layer; ring: the keys and values passed N-1 times, hidden under the
  compute only in part, counted in full here) at NVLink's 450 GB/s per direction; the decode is not split;
- with a preset: the bench summary's skipped passes and reused attention applied to the big model (the
  assumption gpu_estimate.py states: big models skip what the embedded one skips).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gpu_estimate import GPUS, WAN_1_3B, WAN_VAE  # noqa: E402

WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
MODELS = {"Wan2.1-1.3B": WAN_1_3B, "Wan2.1-14B": WAN_14B}
SIZES = {"480p": (480, 832), "720p": (720, 1280)}
UMT5_XXL = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
)
NVLINK = 450e9  # bytes/s per direction, H100 SXM
FRAMES, STEPS, UTILISATION = 81, 50, 0.45


def meta_pipeline(config: dict):
    """A WanPipeline of the model's published configuration on the meta device, in bf16."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**config).to(torch.bfloat16)
        vae = AutoencoderKLWan(**WAN_VAE)  # Wan's VAE runs in float32
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).to(torch.bfloat16)
    return WanPipeline(
        tokenizer=None,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def flops(config: dict, height: int, width: int) -> dict:
    from gpu_estimate import count_flops

    return count_flops(height, width, FRAMES, config=config)


def presets(summary: str | None) -> list[dict]:
    rows = [{"accel": "none", "skipped_fraction": 0.0, "attention_reused_fraction": 0.0}]
    if summary:
        with open(summary) as fh:
            rows += [r for r in csv.DictReader(fh) if r["accel"] in ("balanced", "fast")]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", default=None, help="bench summary.csv whose presets' skip/reuse fractions apply")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    from genaccel.memory.estimate import ModelSizes, estimate_peak, size_text

    peak_flops, _ = GPUS["H100-SXM"]
    rate = peak_flops * UTILISATION
    lines = [
        f"ESTIMATES (not measured): {FRAMES} frames, {STEPS} steps with CFG ({2 * STEPS} passes), H100 SXM at "
        f"{UTILISATION:.0%} of bf16 peak, NVLink {NVLINK / 1e9:.0f} GB/s. Memory: genaccel's estimate per GPU.",
        "",
    ]
    for name, config in MODELS.items():
        pipe = meta_pipeline(config)
        sizes = ModelSizes.of(pipe)
        heads = config["num_attention_heads"]
        for label, (height, width) in SIZES.items():
            f = flops(config, height, width)
            per_pass = f["pass_flops"] / rate
            attention_share = f["attention_product_flops"] / f["pass_flops"]
            decode = f["decode_flops"] / rate
            tokens, dim, layers = (
                f["tokens"],
                config["num_attention_heads"] * config["attention_head_dim"],
                config["num_layers"],
            )
            rows = presets(args.summary)
            names = [r["accel"] for r in rows]
            lines += [
                f"**{name}, {label} ({width}x{height}, {tokens:,} tokens)**",
                "",
                "| GPUs | memory/GPU: no offload / `--offload model` / `group` | context parallel | "
                + " | ".join(f"s per video, `{a}`: batch / context parallel" for a in names)
                + " | videos per hour, batch: "
                + " / ".join(f"`{a}`" for a in names)
                + " |",
                "|---|---|---|" + "---|" * len(names) + "---|",
            ]
            for n in (1, 2, 4, 8):
                memory = {
                    off: estimate_peak(
                        sizes,
                        num_frames=FRAMES,
                        height=height,
                        width=width,
                        guidance_scale=5.0,
                        offload=off,
                        device="cuda",
                        shards=n,
                    ).peak
                    for off in ("none", "model", "group")
                }
                kind = "ulysses" if heads % n == 0 else "ring"
                local = tokens // n * dim * 2  # bytes of one local q, k, v or output in bf16
                per_layer = 4 * local * (n - 1) / n if kind == "ulysses" else 2 * local * (n - 1)
                communication = layers * per_layer / NVLINK
                times, per_hour = [], []
                for r in rows:
                    passes = 2 * STEPS * (1.0 - float(r["skipped_fraction"] or 0))
                    pass_time = per_pass * (1 - attention_share * float(r["attention_reused_fraction"] or 0))
                    single = passes * pass_time + decode
                    split = passes * (pass_time / n + communication) + decode
                    times.append(f"{single:.0f}" if n == 1 else f"{single:.0f} / {split:.0f}")
                    per_hour.append(f"{3600 / single * n:.0f}")
                shown = " / ".join(size_text(memory[mode]) for mode in ("none", "model", "group"))
                lines.append(
                    f"| {n} | {shown} | "
                    f"{'-' if n == 1 else f'{kind}={n}'} | " + " | ".join(times) + " | " + " / ".join(per_hour) + " |"
                )
            lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
