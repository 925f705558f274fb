"""ESTIMATED GPU timings for a Wan2.1-1.3B-sized model at 480x832, 81 frames: FLOPs and memory traffic, not a run.

    python benchmarks/gpu_estimate.py --summary benchmarks/results/long/summary.csv

No GPU is available to this project, so this computes, instead of measuring:
- the FLOPs of one transformer pass and of the VAE decode, counted exactly by PyTorch's
  FlopCounterMode on diffusers' own WanTransformer3DModel and AutoencoderKLWan built with the
  Wan2.1-T2V-1.3B configuration on the meta device (no weights, no compute);
- time = FLOPs / (peak bf16 throughput x an assumed utilisation), checked against the time to
  stream the weights once per pass (memory traffic), whichever is larger;
- per configuration of a bench summary (measured on the embedded model), the transformer passes it
  skipped and the attention calls it reused, applied to the big model's per-pass costs.
That last step assumes the big model's caches skip the same fractions as the small one's, which
is the largest source of error: real models have their own schedules. The output is labelled as
an estimate everywhere.
"""

from __future__ import annotations

import argparse
import csv
import sys

GPUS = {  # dense bf16 peak FLOP/s, memory bandwidth bytes/s (vendor datasheets)
    "A100-80GB": (312e12, 2.04e12),
    "H100-SXM": (989e12, 3.35e12),
}
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN_VAE = dict(
    base_dim=96,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
)


def count_flops(height: int, width: int, frames: int, text_tokens: int = 512, config: dict = WAN_1_3B) -> dict:
    """FLOPs of one transformer pass (total and attention score/value products) and of one VAE decode, for a
    Wan transformer of `config` (default: Wan2.1-1.3B's)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    with torch.device("meta"):
        transformer = WanTransformer3DModel(**config)
        vae = AutoencoderKLWan(**WAN_VAE)
        x = torch.randn(latent)
        text = torch.randn(1, text_tokens, config["text_dim"])
        t = torch.tensor([500.0])
    params = sum(p.numel() for p in transformer.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        transformer(x, t, text, return_dict=False)
    per_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    with torch.no_grad(), FlopCounterMode(display=False) as vae_counter:
        vae.decode(x, return_dict=False)
    tokens = latent[2] * (latent[3] // 2) * (latent[4] // 2)
    return {
        "tokens": tokens,
        "params": params,
        "pass_flops": counter.get_total_flops(),
        "attention_product_flops": per_op.get("aten.bmm", 0),
        "decode_flops": vae_counter.get_total_flops(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--summary", default=None, help="summary.csv of a bench run (its skip/reuse fractions are applied)"
    )
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--utilisation", type=float, default=0.45, help="assumed fraction of peak FLOP/s achieved (default 0.45)"
    )
    args = parser.parse_args()

    f = count_flops(args.height, args.width, args.frames)
    passes = 2 * args.steps  # Wan runs the conditional and unconditional passes separately
    print(
        f"ESTIMATE (not measured): Wan2.1-1.3B-sized transformer ({f['params'] / 1e9:.2f}B params), "
        f"{args.width}x{args.height}, {args.frames} frames = {f['tokens']:,} tokens, {args.steps} steps with CFG "
        f"({passes} passes), utilisation {args.utilisation:.0%} of peak bf16."
    )
    print(
        f"FLOPs: {f['pass_flops'] / 1e12:.0f} TFLOP per pass ({f['attention_product_flops'] / f['pass_flops']:.0%} in "
        f"attention score/value products), VAE decode {f['decode_flops'] / 1e12:.0f} TFLOP.\n"
    )
    rows = [{"accel": "none", "skipped_fraction": 0.0, "attention_reused_fraction": 0.0}]
    if args.summary:
        with open(args.summary) as fh:
            rows = [r for r in csv.DictReader(fh)]
    print("| GPU (estimate) | accel | transformer s | decode s | total s | est. speedup |")
    print("|---|---|---|---|---|---|")
    for gpu, (peak, bandwidth) in GPUS.items():
        rate = peak * args.utilisation
        per_pass = max(
            f["pass_flops"] / rate, 2 * f["params"] / bandwidth
        )  # compute-bound unless streaming weights is slower
        # A reused attention call saves its score/value products and (roughly as much again per layer
        # and type) its projections: approximate its saving as the products' share of the pass.
        attention_share = f["attention_product_flops"] / f["pass_flops"]
        decode = f["decode_flops"] / rate
        base_total = None
        for r in rows:
            computed = 1.0 - float(r["skipped_fraction"] or 0)
            reused = float(r["attention_reused_fraction"] or 0)
            transformer = passes * per_pass * computed * (1 - attention_share * reused)
            total = transformer + decode
            base_total = base_total or total
            print(
                f"| {gpu} | `{r['accel']}` | {transformer:.0f} | {decode:.0f} | {total:.0f} | {base_total / total:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
