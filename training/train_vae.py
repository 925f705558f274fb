"""Train the embedded model's small AutoencoderKLWan from scratch on procedural shape clips.

    python training/train_vae.py --config training/configs/vae.toml [--resume]

Recipe (see the config for numbers):
  1. He-normal re-initialisation of every convolution (std sqrt(2 / fan_in), fan_in counting one time
     tap), zero biases: diffusers' default init leaves a from-scratch Wan VAE with an input-independent
     latent.
  2. Stage "frames": train on single frames (the causal convs then only use their current time tap).
  3. Frame-wise warm start: zero every causal conv's past time taps and make the temporal resampling
     convs copy the current frame, so the network starts out as a frame-by-frame codec of full clips.
  4. Stage "clips": fine-tune on full-length clips (optionally mixed with long ones).
Loss: L1 weighted up on shape pixels, on their outline and on "trail" pixels (background near where the
shape is in neighbouring frames) + MSE + L1 of the mean colour inside the shape + a tiny KL; the model is
trained on the posterior mean and through an unclamped decode (diffusers' decode clamps to [-1, 1]).

The run folder holds checkpoint.safetensors (model, optimizer, EMA, step, RNG; atomically, every few
minutes and at stage ends), loss.csv and, at the end, final/ (save_pretrained, safetensors, with
latents_mean/latents_std measured on encoded clips). The artefacts folder gets vae_loss.png,
vae_reconstruction.png and vae_eval.json (colour/shape/direction accuracy of decoded clips, PSNR,
stray pixels, encode/decode timings at the default and the long size).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint import load_checkpoint, read_meta, save_checkpoint  # noqa: E402

from genaccel.pipelines.shapes import analyze_clip, parse_prompt, random_spec, render_clip  # noqa: E402

CSV_FIELDS = [
    "step",
    "stage",
    "loss",
    "l1w",
    "mse",
    "color",
    "kl",
    "psnr_shape",
    "psnr_bg",
    "lr",
    "shape",
    "sec",
    "threads",
]


# ----------------------------------------------------------------------------- model


def build_vae(cfg: dict) -> AutoencoderKLWan:
    m = cfg["model"]
    down = list(m["temperal_downsample"])
    if len(down) != len(m["dim_mult"]) - 1:
        raise ValueError("temperal_downsample needs len(dim_mult) - 1 entries")
    z = m["z_dim"]
    return AutoencoderKLWan(
        base_dim=m["base_dim"],
        decoder_base_dim=m.get("decoder_base_dim", m["base_dim"]),
        z_dim=z,
        dim_mult=list(m["dim_mult"]),
        num_res_blocks=m["num_res_blocks"],
        attn_scales=[],
        temperal_downsample=down,
        latents_mean=[0.0] * z,
        latents_std=[1.0] * z,
        scale_factor_spatial=2 ** len(down),
        scale_factor_temporal=2 ** sum(bool(d) for d in down),
    )


@torch.no_grad()
def he_init(vae: torch.nn.Module) -> None:
    """He-normal weights for every conv (fan_in over one time tap), zero biases."""
    for mod in vae.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d)):
            w = mod.weight
            fan_in = w.shape[1] * w.shape[-1] * w.shape[-2]  # in_channels * kH * kW
            w.normal_(0.0, math.sqrt(2.0 / fan_in))
            if mod.bias is not None:
                mod.bias.zero_()


@torch.no_grad()
def framewise_warm_start(vae: torch.nn.Module) -> int:
    """Zero the past time taps of causal 3-tap convs and make temporal resampling copy the current frame."""
    touched = 0
    resample_convs = set()
    for mod in vae.modules():
        if isinstance(mod, WanResample) and hasattr(mod, "time_conv"):
            conv = mod.time_conv
            resample_convs.add(id(conv))
            w = conv.weight  # (out, in, 3, 1, 1)
            w.zero_()
            c = w.shape[1]
            eye = torch.eye(c, dtype=w.dtype)
            for k in range(w.shape[0] // c):  # upsample: 2 output frames per input frame
                w[k * c : (k + 1) * c, :, -1, 0, 0] = eye
            conv.bias.zero_()
            touched += 1
    for mod in vae.modules():
        if isinstance(mod, WanCausalConv3d) and id(mod) not in resample_convs and mod.weight.shape[2] > 1:
            mod.weight[:, :, :-1].zero_()
            touched += 1
    return touched


def encode_moments(vae: AutoencoderKLWan, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance through diffusers' chunked causal encoder (autograd-friendly)."""
    h = vae._encode(x)
    mean, logvar = h.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


def decode_raw(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """diffusers' chunked causal decode without the final clamp (gradients flow on saturated pixels)."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        outs.append(
            vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
        )
    vae.clear_cache()
    return torch.cat(outs, dim=2)


# ----------------------------------------------------------------------------- data and loss


def render_batch(rng: np.random.Generator, batch: int, frames: int, height: int, width: int, scale: int = 1):
    """Clips as float tensor (B, 3, F, H, W) in [-1, 1], shape mask (B, 1, F, H, W) and prompts.

    With ``scale`` > 1 the clips are rendered at (scale*H, scale*W) and cropped to H x W around the
    shape's mid-clip position: the large-in-pixels shapes of the long size, at the default size's cost.
    """
    specs = [random_spec(rng) for _ in range(batch)]
    clips = np.stack([render_clip(s, frames, height * scale, width * scale, rng) for s in specs])
    if scale > 1:
        crops = []
        for s, c in zip(specs, clips):
            fg = np.any(c[frames // 2] != np.array(s.background_rgb, np.uint8), axis=-1)
            ys, xs = np.nonzero(fg)
            y0 = int(
                np.clip(ys.mean() - height / 2 + rng.integers(-height // 5, height // 5 + 1), 0, height * (scale - 1))
            )
            x0 = int(np.clip(xs.mean() - width / 2 + rng.integers(-width // 5, width // 5 + 1), 0, width * (scale - 1)))
            crops.append(c[:, y0 : y0 + height, x0 : x0 + width])
        clips = np.stack(crops)
    bg = np.array([s.background_rgb for s in specs], dtype=np.uint8).reshape(batch, 1, 1, 1, 3)
    mask = np.any(clips != bg, axis=-1)
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
    m = torch.from_numpy(mask).unsqueeze(1).float()
    return x, m, [s.prompt for s in specs]


def pixel_weights(mask: torch.Tensor, lc: dict) -> torch.Tensor:
    """Per-pixel L1 weight: background 1, shape, outline ring and trail zone (near the shape in nearby frames)."""
    b, _, f, h, w = mask.shape
    m2 = mask.transpose(1, 2).reshape(b * f, 1, h, w)
    dil = F.max_pool2d(m2, 3, 1, 1)
    ero = 1.0 - F.max_pool2d(1.0 - m2, 3, 1, 1)
    ring = (dil - ero).reshape(b, f, 1, h, w).transpose(1, 2)
    dil = dil.reshape(b, f, 1, h, w).transpose(1, 2)
    tr = int(lc.get("trail_frames", 4))
    near = F.max_pool3d(mask, (2 * tr + 1, 5, 5), 1, (tr, 2, 2)) if f > 1 else dil
    trail = (near - dil).clamp(min=0.0)
    return 1.0 + lc["shape_weight"] * mask + lc["edge_weight"] * ring + lc["trail_weight"] * trail


def compute_loss(vae, x, mask, lc):
    mean, logvar = encode_moments(vae, x)
    rec = decode_raw(vae, mean)
    diff = rec - x
    w = pixel_weights(mask, lc)
    l1w = (w * diff.abs()).mean() / w.mean()
    mse = diff.pow(2).mean()
    # Mean colour inside the shape, per frame.
    area = mask.sum(dim=(3, 4)).clamp(min=1.0)
    col_rec = (rec * mask).sum(dim=(3, 4)) / area
    col_true = (x * mask).sum(dim=(3, 4)) / area
    has = (mask.sum(dim=(3, 4)) > 0).float()
    color = ((col_rec - col_true).abs() * has).sum() / (has.sum() * 3).clamp(min=1.0)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = l1w + lc["mse_weight"] * mse + lc["color_weight"] * color + lc["kl_weight"] * kl
    with torch.no_grad():
        se = diff.pow(2).mean(dim=1, keepdim=True)
        n_shape = mask.sum().clamp(min=1.0)
        psnr_s = 10 * math.log10(4.0 / max((se * mask).sum().item() / n_shape.item(), 1e-10))
        psnr_b = 10 * math.log10(
            4.0 / max((se * (1 - mask)).sum().item() / (1 - mask).sum().clamp(min=1).item(), 1e-10)
        )
    parts = dict(l1w=l1w.item(), mse=mse.item(), color=color.item(), kl=kl.item(), psnr_shape=psnr_s, psnr_bg=psnr_b)
    return loss, parts


# ----------------------------------------------------------------------------- schedule and checkpoints


def stage_bounds(cfg):
    bounds, start = [], 0
    for st in cfg["stages"]:
        bounds.append((start, start + st["steps"]))
        start += st["steps"]
    return bounds


def lr_at(stage: dict, k: int) -> float:
    warm = stage.get("warmup", 0)
    if k < warm:
        return stage["lr"] * (k + 1) / warm
    prog = (k - warm) / max(stage["steps"] - warm, 1)
    floor = stage.get("min_lr_frac", 0.05)
    return stage["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))


def make_optimizer(vae, stage):
    return torch.optim.AdamW(vae.parameters(), lr=stage["lr"], betas=(0.9, 0.99), weight_decay=0.0)


class ThreadGovernor:
    """Use ``max_threads`` intra-op threads, but fall back to one while the CPU is contended.

    On a shared 2-core machine a niced 2-thread torch job slows down 5-50x as soon as another process
    takes a core (every parallel region waits for the starved thread), while a 1-thread job barely
    notices. A step that takes more than ``slow_factor`` times the recent fast 2-thread time for the
    same batch shape (or slower than 1 thread was) switches to 1 thread for ``hold`` steps, after which
    2 threads are probed again.
    """

    def __init__(self, max_threads: int, slow_factor: float = 1.6, hold: int = 30):
        self.max_threads, self.slow_factor, self.hold = max_threads, slow_factor, hold
        self.times: dict[tuple[str, int], list[float]] = {}  # recent step seconds per (batch shape, threads)
        self.single_until = -1
        self.switches = 0
        torch.set_num_threads(max_threads)

    def before(self, step: int) -> int:
        n = 1 if step < self.single_until else self.max_threads
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def after(self, step: int, key: str, seconds: float) -> None:
        n = torch.get_num_threads()
        hist = self.times.setdefault((key, n), [])
        if n > 1:
            one = self.times.get((key, 1), [])
            slow = (len(hist) >= 3 and seconds > self.slow_factor * float(np.percentile(hist, 20))) or (
                len(one) >= 3 and seconds > 0.9 * float(np.median(one))
            )
            if slow:
                self.single_until = step + self.hold
                self.switches += 1
                return
        hist.append(seconds)
        del hist[:-30]


def host_rng_state(np_rng) -> dict:
    """numpy's and Python's RNG states as JSON (torch's global generator is saved as a tensor)."""
    return {"numpy": np_rng.bit_generator.state, "python": random.getstate()}


def set_host_rng_state(state: dict, np_rng) -> None:
    np_rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- evaluation and artefacts


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()


@torch.no_grad()
def evaluate(vae, n: int, frames: int, height: int, width: int, seed: int, batch: int = 4) -> dict:
    """Decode ``n`` held-out clips and read them back: colour/shape/direction accuracy, PSNR, stray pixels."""
    vae.eval()
    rng = np.random.default_rng([seed, 999_999])
    hits = {"color": 0, "shape": 0, "motion": 0}
    stray, se_s, se_b, ns, nb, by_shape = [], 0.0, 0.0, 0.0, 0.0, {}
    for start in range(0, n, batch):
        bs = min(batch, n - start)
        x, m, prompts = render_batch(rng, bs, frames, height, width)
        mean, _ = encode_moments(vae, x)
        rec = decode_raw(vae, mean)
        se = (rec.clamp(-1, 1) - x).pow(2).mean(dim=1, keepdim=True)
        se_s += (se * m).sum().item()
        se_b += (se * (1 - m)).sum().item()
        ns += m.sum().item()
        nb += (1 - m).sum().item()
        dec = to_uint8(rec)
        dil = F.max_pool3d(m, (1, 5, 5), 1, (0, 2, 2))[:, 0].numpy() > 0
        for i, p in enumerate(prompts):
            spec = parse_prompt(p)
            got = analyze_clip(dec[i], spec.background)
            for k in hits:
                hits[k] += got is not None and getattr(got, k) == getattr(spec, k)
            if got is not None:
                s = by_shape.setdefault(spec.shape, [0, 0])
                s[0] += got.shape == spec.shape
                s[1] += 1
            bgc = np.asarray(spec.background_rgb, np.float32)
            fgc = np.asarray(spec.rgb, np.float32)
            d = dec[i].astype(np.float32)
            is_fg = np.linalg.norm(d - fgc, axis=-1) < np.linalg.norm(d - bgc, axis=-1)
            stray.append((is_fg & ~dil[i]).sum(axis=(1, 2)).mean())
    vae.train()
    return {
        "clips": n,
        "size": [frames, height, width],
        "color_acc": hits["color"] / n,
        "shape_acc": hits["shape"] / n,
        "direction_acc": hits["motion"] / n,
        "shape_acc_by_shape": {k: v[0] / max(v[1], 1) for k, v in by_shape.items()},
        "psnr_shape_db": 10 * math.log10(4.0 / max(se_s / max(ns, 1), 1e-10)),
        "psnr_background_db": 10 * math.log10(4.0 / max(se_b / max(nb, 1), 1e-10)),
        "stray_pixels_per_frame": float(np.mean(stray)),
    }


@torch.no_grad()
def time_codec(vae, frames, height, width, repeats=3) -> dict:
    """Median seconds to encode and to decode one clip (diffusers' public encode/decode)."""
    vae.eval()
    x = torch.zeros(1, 3, frames, height, width).uniform_(-1, 1)
    enc, dec = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        z = vae.encode(x).latent_dist.mode()
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        vae.decode(z)
        dec.append(time.perf_counter() - t)
    vae.train()
    return {"encode_s": float(np.median(enc)), "decode_s": float(np.median(dec)), "latent": list(z.shape[1:])}


@torch.no_grad()
def latent_stats(vae, n: int, frames: int, height: int, width: int, seed: int) -> tuple[list, list]:
    """Per-channel mean and std of posterior means over ``n`` rendered clips."""
    vae.eval()
    rng = np.random.default_rng([seed, 777_777])
    zs = []
    for _ in range(0, n, 4):
        x, _, _ = render_batch(rng, 4, frames, height, width)
        zs.append(encode_moments(vae, x)[0])
    z = torch.cat(zs).transpose(0, 1).reshape(zs[0].shape[1], -1)
    vae.train()
    return [round(v, 5) for v in z.mean(1).tolist()], [round(max(v, 1e-4), 5) for v in z.std(1).tolist()]


def draw_loss_png(csv_path: Path, out: Path) -> None:
    from PIL import Image, ImageDraw

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows], dtype=np.float64)
    series = {
        "loss": ("loss", (30, 90, 200)),
        "psnr_shape": ("PSNR shape (dB)", (200, 60, 30)),
        "psnr_bg": ("PSNR background (dB)", (40, 150, 60)),
    }
    W, H, pad = 900, 620, 60
    img = Image.new("RGB", (W, H), "white")
    dr = ImageDraw.Draw(img)
    panels = [("loss", ["loss"], True), ("PSNR (dB)", ["psnr_shape", "psnr_bg"], False)]
    ph = (H - 3 * pad // 2) // 2
    for pi, (title, keys, logy) in enumerate(panels):
        top = pad // 2 + pi * (ph + pad // 2)
        x0, x1, y0, y1 = pad, W - pad // 2, top + 20, top + ph
        dr.rectangle([x0, y0, x1, y1], outline="black")
        dr.text((x0, top + 4), title + (" (log scale, 25-step mean)" if logy else " (25-step mean)"), fill="black")
        vals = {k: np.array([float(r[k]) for r in rows]) for k in keys}
        k = 25
        smooth = {key: np.convolve(v, np.ones(k) / k, mode="valid") if len(v) > k else v for key, v in vals.items()}
        sx = steps[len(steps) - len(next(iter(smooth.values()))) :]
        allv = np.concatenate([np.log10(np.maximum(v, 1e-6)) if logy else v for v in smooth.values()])
        lo, hi = float(allv.min()), float(allv.max())
        hi = hi if hi > lo else lo + 1
        for key, v in smooth.items():
            v = np.log10(np.maximum(v, 1e-6)) if logy else v
            pts = [
                (
                    x0 + (x1 - x0) * (s - steps[0]) / max(steps[-1] - steps[0], 1),
                    y1 - (y1 - y0) * (val - lo) / (hi - lo),
                )
                for s, val in zip(sx, v)
            ]
            if len(pts) > 1:
                dr.line(pts, fill=series[key][1], width=2)
        for frac in (0.0, 0.5, 1.0):
            val = lo + frac * (hi - lo)
            lab = f"{10**val:.3g}" if logy else f"{val:.1f}"
            dr.text((4, y1 - frac * (y1 - y0) - 6), lab, fill="black")
        dr.text((x0, y1 + 4), f"step {int(steps[0])}", fill="black")
        dr.text((x1 - 70, y1 + 4), f"step {int(steps[-1])}", fill="black")
        for j, key in enumerate(keys):
            dr.text((x1 - 200, y0 + 6 + 14 * j), series[key][0], fill=series[key][1])
    # Stage boundaries.
    stages = [r["stage"] for r in rows]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            xb = pad + (W - pad // 2 - pad) * (steps[i] - steps[0]) / max(steps[-1] - steps[0], 1)
            dr.line([(xb, pad // 2), (xb, H - pad // 2)], fill=(150, 150, 150), width=1)
            dr.text((xb + 3, pad // 2 + 22), stages[i], fill=(120, 120, 120))
    img.save(out)


@torch.no_grad()
def draw_recon_png(vae, out: Path, seed: int, frames=17, height=64, width=64, n=6, cols=5) -> None:
    from PIL import Image, ImageDraw

    vae.eval()
    rng = np.random.default_rng([seed, 555_555])
    x, _, prompts = render_batch(rng, n, frames, height, width)
    rec = decode_raw(vae, encode_moments(vae, x)[0])
    orig, dec = to_uint8(x), to_uint8(rec)
    idx = np.linspace(0, frames - 1, cols).round().astype(int)
    s = 2  # upscale
    cell_w, cell_h, label_h = width * s, height * s, 14
    W = cols * cell_w * 2 + 12
    H = n * (cell_h + label_h)
    img = Image.new("RGB", (W, H + 16), "white")
    dr = ImageDraw.Draw(img)
    dr.text((4, 2), "original", fill="black")
    dr.text((cols * cell_w + 16, 2), "decoded", fill="black")
    for r in range(n):
        y = 16 + r * (cell_h + label_h)
        dr.text((4, y), f"{prompts[r]}  (frames {', '.join(map(str, idx))})", fill="black")
        for c, f in enumerate(idx):
            for side, arr in enumerate((orig, dec)):
                tile = Image.fromarray(arr[r, f]).resize((cell_w, cell_h), Image.NEAREST)
                img.paste(tile, (side * (cols * cell_w + 12) + c * cell_w, y + label_h))
    img.save(out)
    vae.train()


# ----------------------------------------------------------------------------- main


def finalize(vae, ema, cfg, run_dir: Path, art_dir: Path, csv_path: Path) -> None:
    fin = cfg["final"]
    d = cfg["data"]
    candidates = {"model": vae} if ema is None else {"model": vae, "ema": ema}
    scores = {}
    for name, net in candidates.items():
        scores[name] = evaluate(net, fin["select_clips"], d["frames"], d["height"], d["width"], cfg["seed"] + 1)
        print(f"[final] {name}: {json.dumps(scores[name])}", flush=True)
    key = lambda n: (  # noqa: E731
        scores[n]["shape_acc"] + scores[n]["color_acc"] + scores[n]["direction_acc"],
        scores[n]["psnr_shape_db"],
    )
    best = max(scores, key=key)
    net = candidates[best]
    mean, std = latent_stats(net, fin["stats_clips"], d["frames"], d["height"], d["width"], cfg["seed"] + 2)
    net.register_to_config(latents_mean=mean, latents_std=std)
    final_dir = run_dir / "final"
    net.save_pretrained(final_dir, safe_serialization=True)
    # Reload what was saved: the evaluation below is of the shipped artefact.
    net = AutoencoderKLWan.from_pretrained(final_dir)
    report = {
        "selected_weights": best,
        "params": sum(p.numel() for p in net.parameters()),
        "mb_fp32": sum(p.numel() for p in net.parameters()) * 4 / 1e6,
        "mb_fp16": sum(p.numel() for p in net.parameters()) * 2 / 1e6,
        "config": {
            k: net.config[k]
            for k in (
                "base_dim",
                "decoder_base_dim",
                "z_dim",
                "dim_mult",
                "num_res_blocks",
                "temperal_downsample",
                "scale_factor_spatial",
                "scale_factor_temporal",
            )
        },
        "latents_mean": mean,
        "latents_std": std,
        "default": evaluate(net, fin["eval_clips"], d["frames"], d["height"], d["width"], cfg["seed"] + 3),
        "long": evaluate(
            net, fin["eval_long_clips"], d["long_frames"], d["long_height"], d["long_width"], cfg["seed"] + 4, batch=1
        ),
        "timing_threads": torch.get_num_threads(),
        "timing_default": time_codec(net, d["frames"], d["height"], d["width"]),
        "timing_long": time_codec(net, d["long_frames"], d["long_height"], d["long_width"], repeats=2),
        "selection_scores": scores,
    }
    art_dir.mkdir(parents=True, exist_ok=True)
    (art_dir / "vae_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    draw_loss_png(csv_path, art_dir / "vae_loss.png")
    draw_recon_png(net, art_dir / "vae_reconstruction.png", cfg["seed"], d["frames"], d["height"], d["width"])
    draw_recon_png(
        net,
        art_dir / "vae_reconstruction_long.png",
        cfg["seed"],
        d["long_frames"],
        d["long_height"],
        d["long_width"],
        n=3,
    )
    print(f"[final] saved {final_dir}; report {art_dir / 'vae_eval.json'}", flush=True)
    print(
        json.dumps({k: report[k] for k in ("default", "long", "timing_default", "timing_long")}, indent=1), flush=True
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint if there is one")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this global step (smoke tests)")
    args = ap.parse_args(argv)

    cfg = tomllib.loads(args.config.read_text())
    threads = int(cfg.get("threads", 2))
    governor = ThreadGovernor(threads) if cfg.get("adaptive_threads", True) else None
    torch.set_num_threads(threads)
    run_dir = (REPO / cfg["run_dir"]).resolve()
    art_dir = (REPO / cfg["artifacts_dir"]).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.safetensors"
    csv_path = run_dir / "loss.csv"

    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    random.seed(seed)
    np_rng = np.random.default_rng(seed)
    vae = build_vae(cfg)
    he_init(vae)
    vae.train()
    bounds = stage_bounds(cfg)
    total = bounds[-1][1]
    step, warm_started, ema = 0, False, None
    stage_idx = 0
    opt = make_optimizer(vae, cfg["stages"][0])

    if args.resume and ckpt_path.exists():
        st = read_meta(ckpt_path)
        step, warm_started = st["step"], st["warm_started"]
        stage_idx = st["stage_idx"]
        opt = make_optimizer(vae, cfg["stages"][stage_idx])
        ema = copy.deepcopy(vae) if st["has_ema"] else None
        load_checkpoint(
            ckpt_path,
            modules={"model": vae, **({"ema": ema} if ema is not None else {})},
            optimizer=opt,
            generators={"torch": torch.default_generator},
        )
        set_host_rng_state(st["rng"], np_rng)
        print(f"[resume] from step {step} (stage {cfg['stages'][stage_idx]['name']})", flush=True)
        # Drop CSV rows logged after the checkpoint so the log matches the resumed trajectory.
        if csv_path.exists():
            rows = [r for r in csv.DictReader(open(csv_path)) if int(r["step"]) <= step]
            with open(csv_path, "w", newline="") as fh:
                wr = csv.DictWriter(fh, CSV_FIELDS)
                wr.writeheader()
                wr.writerows(rows)
    else:
        if args.resume:
            print("[resume] no checkpoint yet: starting fresh", flush=True)
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, CSV_FIELDS).writeheader()

    n_params = sum(p.numel() for p in vae.parameters())
    print(
        f"[vae] {n_params / 1e6:.3f}M params ({n_params * 2 / 1e6:.2f} MB fp16); {total} steps in "
        f"{len(bounds)} stages; run dir {run_dir}",
        flush=True,
    )

    def checkpoint():
        save_checkpoint(
            ckpt_path,
            modules={"model": vae, **({"ema": ema} if ema is not None else {})},
            optimizer=opt,
            generators={"torch": torch.default_generator},
            step=step,
            stage_idx=stage_idx,
            warm_started=warm_started,
            has_ema=ema is not None,
            rng=host_rng_state(np_rng),
            config=cfg,
        )

    stop_at = total if args.max_steps is None else min(total, args.max_steps)
    last_ckpt = time.time()
    ckpt_every = 60.0 * float(cfg.get("checkpoint_minutes", 4))
    lc = cfg["loss"]
    bar = tqdm(total=stop_at, initial=step, desc="vae", dynamic_ncols=True, mininterval=5.0)
    csv_fh = open(csv_path, "a", newline="")
    writer = csv.DictWriter(csv_fh, CSV_FIELDS)
    while step < stop_at:
        # Stage bookkeeping (also right after a resume).
        while step >= bounds[stage_idx][1]:
            stage_idx += 1
            opt = make_optimizer(vae, cfg["stages"][stage_idx])
        stage = cfg["stages"][stage_idx]
        if stage.get("framewise_warm_start") and not warm_started:
            n = framewise_warm_start(vae)
            warm_started = True
            opt = make_optimizer(vae, stage)
            print(f"[stage {stage['name']}] frame-wise warm start: {n} convs reset", flush=True)
        if stage.get("ema_decay") and ema is None:
            ema = copy.deepcopy(vae)
        k = step - bounds[stage_idx][0]
        lr = lr_at(stage, k)
        for g in opt.param_groups:
            g["lr"] = lr
        cyc = stage["cycle"][k % len(stage["cycle"])]
        batch, frames, height, width = cyc[:4]
        scale = int(cyc[4]) if len(cyc) > 4 else 1
        # Data for a step depends only on (seed, step): identical after a resume.
        data_rng = np.random.default_rng([seed, step])
        x, m, _ = render_batch(data_rng, batch, frames, height, width, scale)
        n_threads = governor.before(step) if governor else threads
        t0 = time.time()
        loss, parts = compute_loss(vae, x, m, lc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), stage.get("grad_clip", 1.0))
        opt.step()
        if ema is not None:
            decay = stage.get("ema_decay", 0.999)
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), vae.parameters()):
                    pe.lerp_(pm, 1.0 - decay)
        sec = time.time() - t0
        shape_key = f"{batch}x{frames}x{height}x{width}" + (f"/{scale}" if scale > 1 else "")
        if governor:
            governor.after(step, shape_key, sec)
        step += 1
        writer.writerow(
            {
                "step": step,
                "stage": stage["name"],
                "loss": f"{loss.item():.5f}",
                **{k2: f"{v:.5f}" for k2, v in parts.items()},
                "lr": f"{lr:.2e}",
                "shape": shape_key,
                "sec": f"{sec:.3f}",
                "threads": n_threads,
            }
        )
        bar.update(1)
        bar.set_postfix_str(
            f"{stage['name']} loss {loss.item():.4f} shape {parts['psnr_shape']:.1f}dB bg {parts['psnr_bg']:.1f}dB",
            refresh=False,
        )
        if step % 25 == 0:
            csv_fh.flush()
        if time.time() - last_ckpt > ckpt_every or step == bounds[stage_idx][1] or step == stop_at:
            csv_fh.flush()
            checkpoint()
            last_ckpt = time.time()
    bar.close()
    csv_fh.close()
    torch.set_num_threads(threads)
    if step >= total:
        checkpoint()
        finalize(vae, ema, cfg, run_dir, art_dir, csv_path)
    else:
        print(f"[stop] at step {step} of {total} (--max-steps); checkpoint saved", flush=True)


if __name__ == "__main__":
    main()
