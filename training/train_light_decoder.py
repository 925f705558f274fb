"""Distil the embedded model's light decoder (TAEHV-style) from the embedded VAE's decoder.

    python training/train_light_decoder.py --config training/configs/light_decoder.toml [--resume]

1. The pool: latents in the transformer's space (normalised) and the frames the full VAE decoder makes of
   them (uint8), for clips of the embedded grammar at both settings: grammar clips through the VAE encoder,
   and the embedded transformer's own latents (as users run it, with a preset) for prompts outside
   benchmarks/holdout_prompts.txt. Written once, shard by shard, to run_dir/pool/ (resumable).
2. Training: the student (`genaccel.decoding.taehv.TAEHVDecoder`) learns the full decoder's frames, L1 + MSE,
   on default-setting clips and on 16x16-latent crops of long-setting clips (the decoder is convolutional;
   the crop's border is left out of the loss). AdamW, warm-up then cosine, an EMA of the weights;
   run_dir/checkpoint.safetensors every few minutes.
3. Finalise: the EMA weights go to output_dir (config.json + model.safetensors, float16) beside the VAE, and
   the artefacts folder gets the loss plot, a comparison strip, and light_decoder_eval.json: PSNR against the
   full decode and decode times at both settings, on the baseline transformer's latents for held-out prompts.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from checkpoint import save_checkpoint  # noqa: E402
from train_transformer import load_config, lr_at, resume, start_loss_csv, training_parser, update  # noqa: E402

from genaccel.decoding.taehv import TAEHVConfig, TAEHVDecoder  # noqa: E402
from genaccel.pipelines.shapes import random_spec, render_dataset  # noqa: E402

SHARD = 8  # clips per pool shard


def _settings():
    import tomllib

    toml = tomllib.loads((ROOT / "pipelines/embedded/genaccel.toml").read_text())
    base = {k: toml[k] for k in ("height", "width", "num_frames")}
    return {"default": base, "long": {**base, **toml["settings"]["long"]}}


def _holdout() -> set[str]:
    return {line.strip() for line in (ROOT / "benchmarks/holdout_prompts.txt").read_text().splitlines() if line.strip()}


class Teacher:
    """The embedded pipeline: its VAE (encoder and full decoder) and its transformer (for generated latents)."""

    def __init__(self):
        import genaccel

        self.pipe = genaccel.load_pipeline("tiny")  # the embedded model
        self.pipe.set_progress_bar_config(disable=True)
        vae = self.pipe.vae
        z = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, T, h, w) latents -> uint8 frames (N, F, H, W, 3), as the pipeline makes them."""
        video = self.pipe.vae.decode(latents * self.std + self.mean).sample
        return (video.clamp(-1, 1) / 2 + 0.5).mul(255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()

    @torch.inference_mode()
    def encode(self, clips: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)
        return (self.pipe.vae.encode(x).latent_dist.mean - self.mean) / self.std

    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds: list[int], setting: str, accel: str) -> torch.Tensor:
        from genaccel.generation.prepare import install_prepared, prepare
        from genaccel.generation.request import GenerationRequest

        out = []
        for prompt, seed in zip(prompts, seeds):
            prepared = prepare(self.pipe, GenerationRequest(prompt=prompt, seed=seed, setting=setting, accel=accel))
            acceleration = install_prepared(self.pipe, prepared)
            call = dict(prepared.call, output_type="latent", generator=torch.Generator().manual_seed(seed))
            with acceleration.generation(setting):
                out.append(self.pipe(**call).frames)
        return torch.cat(out)


def build_pool(cfg: dict, run_dir: Path) -> None:
    """Write every missing shard of the pool (latents, full-decoder frames)."""
    pool_dir = run_dir / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    missing = [
        (part, index)
        for part in cfg["pool"]
        for index in range(math.ceil(part["clips"] / SHARD))
        if not (pool_dir / f"{part['name']}-{index:03d}.safetensors").is_file()
    ]
    if not missing:
        return
    teacher, settings, holdout = Teacher(), _settings(), _holdout()
    for part, index in tqdm(missing, desc="pool shards", unit="shard"):
        s = settings[part["setting"]]
        seed = cfg["seed"] * 100_000 + hash_name(part["name"]) * 1000 + index
        if part["source"] == "encoded":
            clips, _ = render_dataset(SHARD, s["num_frames"], s["height"], s["width"], seed=seed)
            latents = teacher.encode(clips)
        else:
            rng = np.random.default_rng(seed)
            prompts = []
            while len(prompts) < SHARD:
                prompt = random_spec(rng).prompt
                if prompt not in holdout:
                    prompts.append(prompt)
            latents = teacher.generate(prompts, [seed * 10 + i for i in range(SHARD)], part["setting"], part["accel"])
        frames = teacher.decode(latents)
        path = pool_dir / f"{part['name']}-{index:03d}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        save_file({"latents": latents.contiguous(), "frames": frames}, str(tmp))
        tmp.replace(path)


def hash_name(name: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 97


def load_pool(run_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Latents (N, T, C, h, w) and frames (N, F, 3, H, W) float in [0, 1], by setting."""
    by_setting: dict[str, list] = {"default": [], "long": []}
    for path in sorted((run_dir / "pool").glob("*.safetensors")):
        t = load_file(str(path))
        setting = "long" if "-long-" in path.name else "default"
        by_setting[setting].append((t["latents"].transpose(1, 2), t["frames"]))
    pool = {}
    for setting, parts in by_setting.items():
        if parts:
            pool[setting] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return pool


def _frames_float(frames_uint8: torch.Tensor) -> torch.Tensor:
    return frames_uint8.permute(0, 1, 4, 2, 3).float().div(255.0)


def batch_of(pool, setting: str, size: int, rng: random.Random, crop: int | None):
    latents, frames = pool[setting]
    picks = [rng.randrange(len(latents)) for _ in range(size)]
    z = latents[picks]
    x = _frames_float(frames[picks])
    if crop is None:
        return z, x, 0
    scale = x.shape[-1] // z.shape[-1]
    zs, xs = [], []
    for i in range(size):
        y0, x0 = rng.randrange(z.shape[-2] - crop + 1), rng.randrange(z.shape[-1] - crop + 1)
        zs.append(z[i, ..., y0 : y0 + crop, x0 : x0 + crop])
        xs.append(x[i, ..., y0 * scale : (y0 + crop) * scale, x0 * scale : (x0 + crop) * scale])
    return torch.stack(zs), torch.stack(xs), 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def train(cfg, args, run_dir: Path, artifacts: Path) -> TAEHVDecoder:
    import copy

    t = cfg["train"]
    model = TAEHVDecoder(TAEHVConfig.from_dict(cfg["model"]))
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg["seed"])
    modules = {"model": model, "ema": ema}
    step, rewarm_from, ckpt_path = resume(args, cfg, run_dir, modules, optimizer, generator)
    if args.finalize_only:
        return ema
    pool = load_pool(run_dir)
    rng = random.Random(cfg["seed"] * 7919 + step)
    loss_csv = run_dir / "loss.csv"
    start_loss_csv(loss_csv, "step,setting,loss,l1,mse,psnr,lr,sec", step, False)
    last_save = time.time()
    margin = t["crop_margin"]
    bar = tqdm(total=t["steps"], initial=step, desc="light decoder", unit="step")
    while step < t["steps"]:
        start = time.perf_counter()
        long_step = "long" in pool and step % t["long_every"] == t["long_every"] - 1
        setting = "long" if long_step else "default"
        z, target, cropped = batch_of(pool, setting, t["batch"], rng, 16 if long_step else None)
        lr = lr_at(step, cfg, rewarm_from)
        for group in optimizer.param_groups:
            group["lr"] = lr
        out = model(z)
        if cropped:
            out = out[..., margin:-margin, margin:-margin]
            target = target[..., margin:-margin, margin:-margin]
        l1 = (out - target).abs().mean()
        mse = (out - target).pow(2).mean()
        loss = l1 + t["mse_weight"] * mse
        update(model, ema, optimizer, loss, step, t["ema_decay"])
        step += 1
        bar.update(1)
        with loss_csv.open("a") as f:
            p = 10 * math.log10(1.0 / max(mse.item(), 1e-12))
            f.write(f"{step},{setting},{loss.item():.6f},{l1.item():.6f},{mse.item():.7f},{p:.2f},{lr:.6g},")
            f.write(f"{time.perf_counter() - start:.3f}\n")
        if time.time() - last_save > cfg["checkpoint_minutes"] * 60 or step == t["steps"]:
            save_checkpoint(
                ckpt_path if ckpt_path.parent == run_dir else run_dir / "checkpoint.safetensors",
                modules=modules,
                optimizer=optimizer,
                generators={"train": generator},
                step=step,
                rewarm_from=rewarm_from,
            )
            last_save = time.time()
    bar.close()
    return ema


def finalize(cfg, decoder: TAEHVDecoder, run_dir: Path, artifacts: Path) -> None:
    """Ship the weights, then measure them on held-out prompts (the baseline's latents) at both settings."""
    out_dir = ROOT / cfg["output_dir"]
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "TAEHVDecoder", "input": "transformer latents", **decoder.config.to_dict()}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().half().contiguous() for k, v in decoder.state_dict().items()}
    tmp = out_dir / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / "model.safetensors")

    decoder = decoder.float().eval()
    teacher = Teacher()
    holdout = sorted(_holdout())
    report = {"command": "python training/train_light_decoder.py --config training/configs/light_decoder.toml"}
    strips = []
    for setting in ("default", "long"):
        n = cfg["eval"]["clips"] if setting == "default" else max(2, cfg["eval"]["clips"] // 4)
        prompts = [holdout[i % len(holdout)] for i in range(n)]
        latents = teacher.generate(prompts, [900 + i for i in range(n)], setting, "none")
        values, full_s, light_s = [], [], []
        for i in range(n):
            z = latents[i : i + 1]
            start = time.perf_counter()
            full = _frames_float(teacher.decode(z))
            full_s.append(time.perf_counter() - start)
            with torch.inference_mode():
                start = time.perf_counter()
                light = decoder(z.transpose(1, 2))
                light_s.append(time.perf_counter() - start)
            values.append(psnr(light, full))
            if i == 0:
                picks = np.linspace(0, full.shape[1] - 1, 5).round().astype(int)
                row = [torch.cat([full[0, j], light[0, j]], 1) for j in picks]
                strips.append(F.interpolate(torch.cat(row, 2)[None], size=(256, 640))[0])
        report[setting] = {
            "clips": n,
            "psnr_mean_db": round(float(np.mean(values)), 2),
            "psnr_min_db": round(float(np.min(values)), 2),
            "full_decode_s_median": round(float(np.median(full_s)), 4),
            "light_decode_s_median": round(float(np.median(light_s)), 4),
            "speedup": round(float(np.median(full_s) / np.median(light_s)), 1),
        }
        print(setting, report[setting], flush=True)
    report["parameters"] = sum(p.numel() for p in decoder.parameters())
    (artifacts / "light_decoder_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    from PIL import Image

    image = torch.cat(strips, 1).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(image).save(artifacts / "light_decoder.png")
    plot(run_dir / "loss.csv", artifacts / "light_decoder_loss.png")


def plot(csv_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for setting in ("default", "long"):
        pts = [(int(r["step"]), float(r["psnr"])) for r in rows if r["setting"] == setting]
        if len(pts) > 25:
            y = np.convolve([p[1] for p in pts], np.ones(25) / 25, mode="valid")
            ax.plot([p[0] for p in pts][24:], y, label=f"{setting} (moving mean of 25)")
    ax.set_xlabel("step")
    ax.set_ylabel("training PSNR vs full decode (dB)")
    ax.set_title("embedded light decoder distillation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    parser = training_parser(__doc__, "training/configs/light_decoder.toml", "skip training, ship the checkpoint")
    args = parser.parse_args()
    cfg, run_dir, artifacts = load_config(args)
    torch.manual_seed(cfg["seed"])
    if not args.finalize_only:
        build_pool(cfg, run_dir)
    decoder = train(cfg, args, run_dir, artifacts)
    finalize(cfg, decoder, run_dir, artifacts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
