"""Train the embedded model's transformer and assemble the shipped WanPipeline folder.

    python training/train_transformer.py --config training/configs/transformer.toml --resume

Steps (each resumable):
1. Text side: a word-level tokenizer over the grammar and a tiny frozen random UMT5 encoder; the
   embedding of every prompt of the grammar (and of the empty prompt) is computed once.
2. Latent cache: clips rendered from the grammar at the default and long settings, encoded by the
   trained VAE (posterior mean) and normalised with the VAE's latents_mean/std, exactly as
   WanPipeline denormalises before decoding. Cached in run_dir in chunks.
3. Flow matching on x_t = (1 - s) x0 + s noise with target noise - x0 (Wan's flow prediction),
   timesteps 1000 s with s logit-normal or uniform, caption dropout for CFG, AdamW with warm-up and
   cosine decay, EMA weights. Checkpoints every few minutes.
4. The EMA transformer, the VAE, the text encoder, tokenizer and a UniPC flow scheduler are saved
   with `WanPipeline.save_pretrained` (safetensors), with genaccel.toml holding the default and long
   settings; plus a loss curve and a sample grid in artifacts_dir.

`[model] attention = "block_causal"` trains from scratch with a mask letting each chunk of latent frames
see only itself and earlier chunks. The shipped streaming model is instead fine-tuned from this one by
train_causal.py, which shares this script's run setup, data and update step.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import tomllib
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint import load_checkpoint, read_meta, save_checkpoint  # noqa: E402


# ----------------------------------------------------------------------------- text
def build_text_side(cfg: dict):
    from transformers import UMT5Config, UMT5EncoderModel

    from genaccel.pipelines.tokenizer import build_word_tokenizer

    t = cfg["text"]
    tokenizer = build_word_tokenizer(style="t5", model_max_length=t["max_sequence_length"])
    torch.manual_seed(cfg["seed"])
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=t["d_model"],
        d_kv=t["d_model"] // t["num_heads"],
        d_ff=t["d_ff"],
        num_layers=t["num_layers"],
        num_heads=t["num_heads"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    encoder = UMT5EncoderModel(config).eval().requires_grad_(False)
    return tokenizer, encoder


# ----------------------------------------------------------------------------- model
def build_transformer(cfg: dict, text_dim: int):
    from diffusers import WanTransformer3DModel

    m = cfg["model"]
    torch.manual_seed(cfg["seed"] + 1)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=m["num_attention_heads"],
        attention_head_dim=m["attention_head_dim"],
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=m["freq_dim"],
        ffn_dim=m["ffn_dim"],
        num_layers=m["num_layers"],
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )


class BlockCausalMask:
    """Wraps a Wan self-attention processor: chunk i of latent frames attends to chunks <= i."""

    def __init__(self, processor, chunk_frames: int):
        self.processor = processor
        self.chunk_frames = chunk_frames
        self.latent_frames = 1  # set by the training loop before each forward

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        tokens = hidden_states.shape[1]
        per_frame = tokens // self.latent_frames
        chunk = torch.arange(tokens, device=hidden_states.device) // (per_frame * self.chunk_frames)
        mask = chunk[:, None] >= chunk[None, :]
        return self.processor(attn, hidden_states, encoder_hidden_states, mask, rotary_emb)


def install_block_causal(transformer, chunk_frames: int) -> list[BlockCausalMask]:
    wrappers = []
    for block in transformer.blocks:
        wrapper = BlockCausalMask(block.attn1.processor, chunk_frames)
        block.attn1.set_processor(wrapper)
        wrappers.append(wrapper)
    return wrappers


# ----------------------------------------------------------------------------- data
def encode_clips(vae, clips_uint8: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, F, H, W, 3) -> normalised latents (N, C, f, h, w), from the posterior mean."""
    x = torch.from_numpy(clips_uint8).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        z = vae.encode(x).latent_dist.mean
    return (z - mean) / std


def build_latent_cache(cfg: dict, vae, run_dir: Path, kind: str) -> tuple[torch.Tensor, list[str]]:
    """Render and encode the clips of one setting ('default' or 'long'), resumable by chunk."""
    from genaccel.pipelines.shapes import render_dataset

    d = cfg["data"]
    prefix = "" if kind == "default" else "long_"
    n, h, w, f = d[f"{prefix}clips"], d[f"{prefix}height"], d[f"{prefix}width"], d[f"{prefix}frames"]
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
    chunk, batch = 200, d["encode_batch"]
    latents, prompts = [], []
    seed_base = cfg["seed"] * 1000 + (0 if kind == "default" else 500)
    for c in tqdm(range(math.ceil(n / chunk)), desc=f"encode {kind} clips", unit="chunk"):
        path = run_dir / f"latents_{kind}_{c:03d}.safetensors"
        count = min(chunk, n - c * chunk)
        clips, chunk_prompts = render_dataset(count, f, h, w, seed=seed_base + c)
        if not path.is_file():
            parts = [encode_clips(vae, clips[i : i + batch], mean, std) for i in range(0, count, batch)]
            save_file({"latents": torch.cat(parts).contiguous()}, str(path))
        latents.append(load_file(str(path))["latents"])
        prompts += chunk_prompts
    return torch.cat(latents), prompts


# ----------------------------------------------------------------------------- run setup (shared with train_causal.py)
def training_parser(doc: str, config: str, finalize_help: str) -> argparse.ArgumentParser:
    """The options every training script takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / config))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from run_dir/checkpoint.safetensors (or the committed resume_from export)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (smoke runs)")
    parser.add_argument("--finalize-only", action="store_true", help=finalize_help)
    return parser


def load_config(args) -> tuple[dict, Path, Path]:
    """The TOML config (with --steps applied), torch's thread count set, run and artifact folders made."""
    cfg = tomllib.loads(Path(args.config).read_text())
    if args.steps is not None:
        cfg["train"]["steps"] = args.steps
    torch.set_num_threads(cfg.get("threads", 2))
    run_dir, artifacts = ROOT / cfg["run_dir"], ROOT / cfg["artifacts_dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir, artifacts


def grammar_embeddings(pipe, max_sequence_length: int) -> tuple[torch.Tensor, dict[str, int], int]:
    """Text embeddings of every grammar prompt and of the empty prompt (last), the index of each prompt,
    and the empty prompt's index."""
    from genaccel.pipelines.shapes import all_specs

    grammar = sorted({s.prompt for s in all_specs()})
    with torch.inference_mode():
        embeds, _ = pipe.encode_prompt(
            grammar + [""], do_classifier_free_guidance=False, max_sequence_length=max_sequence_length
        )
    return embeds.clone(), {p: i for i, p in enumerate(grammar)}, len(grammar)


def resume(args, cfg: dict, run_dir: Path, modules: dict, optimizer, generator, rewarm: bool = False):
    """Restore the run's checkpoint (or, with no run checkpoint, the committed weights-only export, whose
    learning rate re-warms) when --resume is given. Returns (step, rewarm_from, checkpoint path: the one
    resumed from, else the run's)."""
    ckpt_path = run_dir / "checkpoint.safetensors"
    exported = ROOT / cfg["resume_from"] if cfg.get("resume_from") else None
    if args.resume and not ckpt_path.is_file() and exported is not None and exported.is_file():
        ckpt_path = exported  # weights committed by an earlier session (no optimizer state)
    step, rewarm_from = 0, None
    if args.resume and ckpt_path.is_file():
        step = load_checkpoint(ckpt_path, modules=modules, optimizer=optimizer, generators={"train": generator})["step"]
        rewarm_from = step if ckpt_path == exported or rewarm else read_meta(ckpt_path).get("rewarm_from")
        print(
            f"[resume] from step {step}"
            + (f" (learning rate re-warms from step {rewarm_from})" if rewarm_from is not None else ""),
            flush=True,
        )
    elif ckpt_path.is_file() and not args.finalize_only:
        print(f"[start] {ckpt_path} exists: pass --resume to continue it (starting over)", flush=True)
    return step, rewarm_from, ckpt_path


def start_loss_csv(path: Path, header: str, step: int, finalize_only: bool) -> None:
    """A fresh loss log when training starts from step 0 (never on --finalize-only: the log is tracked)."""
    if not finalize_only and (step == 0 or not path.is_file()):
        path.write_text(header + "\n")


# ----------------------------------------------------------------------------- training
def sample_sigmas(
    batch: int, logit_normal_fraction: float, generator: torch.Generator, shift: float = 1.0
) -> torch.Tensor:
    """Noise levels: logit-normal most of the time, uniform otherwise, then shifted toward noise.

    The shift is the sampler's (sigma' = shift * s / (1 + (shift - 1) * s)): with shift 3 the sampler
    spends 13 of 30 steps above sigma 0.8, where the layout and the motion are decided, and an
    unshifted logit-normal puts under 4% of training there.
    """
    logit = torch.sigmoid(torch.randn(batch, generator=generator))
    uniform = torch.rand(batch, generator=generator)
    use_logit = torch.rand(batch, generator=generator) < logit_normal_fraction
    s = torch.where(use_logit, logit, uniform)
    s = shift * s / (1 + (shift - 1) * s)
    return s.clamp(1e-3, 1 - 1e-3)


def update(transformer, ema, optimizer, loss: torch.Tensor, step: int, ema_decay: float) -> None:
    """One optimizer step on `loss` (gradients clipped to norm 1), then the EMA weights follow; the EMA's
    decay ramps up over the first steps so early weights do not linger."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        decay = min(ema_decay, (1 + step) / (10 + step))
        for p_ema, p in zip(ema.parameters(), transformer.parameters()):
            p_ema.lerp_(p, 1 - decay)


def lr_at(step: int, cfg: dict, rewarm_from: int | None = None) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at train.steps.

    `rewarm_from`: the step a weights-only resume started at. Its optimizer state is new, so the
    learning rate ramps up again over `warmup` steps from there instead of jumping to the schedule.
    """
    t = cfg["train"]
    if step < t["warmup"]:
        return t["lr"] * (step + 1) / t["warmup"]
    progress = (step - t["warmup"]) / max(1, t["steps"] - t["warmup"])
    lr = t["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    if rewarm_from is not None and step - rewarm_from < t["warmup"]:
        lr *= (step - rewarm_from + 1) / t["warmup"]
    return lr


def plot_loss(csv_path: Path, out: Path, title: str = "embedded transformer training") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    steps = [int(r["step"]) for r in rows]
    loss = np.array([float(r["loss"]) for r in rows])
    smooth = np.convolve(loss, np.ones(25) / 25, mode="valid") if len(loss) > 25 else loss
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[len(steps) - len(smooth) :], smooth, label="moving mean (25)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching MSE")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def save_sample_grid(folder: Path, out: Path, cfg: dict, seeds=(0, 1)) -> None:
    """Load the saved pipeline exactly as users will and render a grid: one row per prompt."""
    from diffusers import WanPipeline
    from PIL import Image

    pipe = WanPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    prompts = [
        "a red circle moving left on a black background",
        "a blue square moving up on a gray background",
        "a yellow triangle moving right on a black background",
        "a white circle standing still on a gray background",
        "a magenta triangle moving down on a gray background",
        "a green square moving right on a black background",
    ]
    d, smp = cfg["data"], cfg["sample"]
    rows = []
    for prompt in prompts:
        for seed in seeds:
            video = pipe(
                prompt,
                num_frames=d["frames"],
                height=d["height"],
                width=d["width"],
                num_inference_steps=smp["steps"],
                guidance_scale=smp["guidance"],
                output_type="np",
                max_sequence_length=cfg["text"]["max_sequence_length"],
                generator=torch.Generator().manual_seed(seed),
            ).frames[0]
            picks = np.linspace(0, len(video) - 1, 6).round().astype(int)
            rows.append(np.concatenate([video[i] for i in picks], axis=1))
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(grid).save(out)


def main() -> int:
    parser = training_parser(
        __doc__, "training/configs/transformer.toml", "skip training, save the pipeline from the checkpoint"
    )
    parser.add_argument(
        "--rewarm",
        action="store_true",
        help="re-warm the learning rate from the resumed step (after raising train.steps, whose cosine schedule jumps back up)",
    )
    args = parser.parse_args()
    cfg, run_dir, artifacts = load_config(args)

    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    vae = AutoencoderKLWan.from_pretrained(ROOT / cfg["vae_dir"]).eval().requires_grad_(False)
    # WanPipeline reads the VAE's scale factors from its config (defaults 8x / 4x): make them match
    # the architecture, one 2x spatial step per temperal_downsample entry.
    spatial = 2 ** len(vae.config.temperal_downsample)
    temporal = 2 ** sum(bool(x) for x in vae.config.temperal_downsample)
    if (vae.config.scale_factor_spatial, vae.config.scale_factor_temporal) != (spatial, temporal):
        vae.register_to_config(scale_factor_spatial=spatial, scale_factor_temporal=temporal)
    tokenizer, text_encoder = build_text_side(cfg)
    transformer = build_transformer(cfg, cfg["text"]["d_model"])
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=cfg["sample"]["scheduler_flow_shift"],
        num_train_timesteps=1000,
    )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    n_params = sum(p.numel() for p in transformer.parameters())
    print(f"[transformer] {n_params / 1e6:.2f}M params ({n_params * 2 / 1e6:.1f} MB fp16)", flush=True)

    embeds, prompt_index, empty_index = grammar_embeddings(pipe, cfg["text"]["max_sequence_length"])

    default_latents, default_prompts = build_latent_cache(cfg, vae, run_dir, "default")
    long_latents, long_prompts = build_latent_cache(cfg, vae, run_dir, "long")
    default_ids = torch.tensor([prompt_index[p] for p in default_prompts])
    long_ids = torch.tensor([prompt_index[p] for p in long_prompts])
    print(
        f"[data] default latents {tuple(default_latents.shape)}, long latents {tuple(long_latents.shape)}", flush=True
    )

    masks = (
        install_block_causal(transformer, cfg["model"]["chunk_frames"])
        if cfg["model"]["attention"] == "block_causal"
        else []
    )
    ema = copy.deepcopy(transformer).requires_grad_(False)
    t = cfg["train"]
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=t["lr"], weight_decay=t["weight_decay"], betas=(0.9, 0.99)
    )
    generator = torch.Generator().manual_seed(cfg["seed"])
    step, rewarm_from, ckpt_path = resume(
        args, cfg, run_dir, {"model": transformer, "ema": ema}, optimizer, generator, rewarm=args.rewarm
    )
    loss_csv = artifacts / "transformer_loss.csv"  # tracked, so the curve survives across sessions
    start_loss_csv(loss_csv, "step,loss,kind,lr,seconds", step, args.finalize_only)
    last_ckpt = time.time()
    transformer.train()
    bar = tqdm(total=t["steps"], initial=step, desc="transformer", unit="step", disable=args.finalize_only)
    while step < t["steps"] and not args.finalize_only:
        start = time.perf_counter()
        long_step = t["long_every"] > 0 and step % t["long_every"] == t["long_every"] - 1 and len(long_latents)
        pool, ids, batch = (
            (long_latents, long_ids, t["long_batch"]) if long_step else (default_latents, default_ids, t["batch"])
        )
        pick = torch.randint(len(pool), (batch,), generator=generator)
        x0 = pool[pick]
        text = ids[pick].clone()
        text[torch.rand(batch, generator=generator) < t["caption_dropout"]] = empty_index
        noise = torch.randn(x0.shape, generator=generator)
        sigma = sample_sigmas(batch, t["logit_normal_fraction"], generator, t.get("timestep_shift", 1.0))
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        for m in masks:
            m.latent_frames = x0.shape[2]
        lr = lr_at(step, cfg, rewarm_from)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pred = transformer(xt, sigma * 1000, embeds[text], return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        update(transformer, ema, optimizer, loss, step, t["ema_decay"])
        step += 1
        with loss_csv.open("a") as f:
            f.write(
                f"{step},{loss.item():.6f},{'long' if long_step else 'default'},{lr:.3e},{time.perf_counter() - start:.3f}\n"
            )
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if time.time() - last_ckpt > 60 * cfg["checkpoint_minutes"] or step == t["steps"]:
            ckpt_path = run_dir / "checkpoint.safetensors"
            save_checkpoint(
                ckpt_path,
                modules={"model": transformer, "ema": ema},
                optimizer=optimizer,
                generators={"train": generator},
                step=step,
                rewarm_from=rewarm_from,
            )
            last_ckpt = time.time()
    bar.close()
    if step < t["steps"] and not args.finalize_only:
        return 0

    # ---- assemble the shipped pipeline from the EMA weights
    if not ckpt_path.is_file():
        print("no checkpoint to finalise", file=sys.stderr)
        return 1
    final = build_transformer(cfg, cfg["text"]["d_model"])
    load_checkpoint(ckpt_path, modules={"ema": final})
    final.eval()
    out = ROOT / cfg["output_dir"]
    shipped = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=final, vae=vae, scheduler=scheduler
    )
    shipped.save_pretrained(out, safe_serialization=True)
    d, smp = cfg["data"], cfg["sample"]
    (out / "genaccel.toml").write_text(
        "# genaccel's call settings for this model: [defaults] is --setting default, [settings.long] --setting long.\n"
        f"height = {d['height']}\nwidth = {d['width']}\nnum_frames = {d['frames']}\n"
        f"num_inference_steps = {smp['steps']}\nguidance_scale = {smp['guidance']}\n\n"
        f"[extra]\nmax_sequence_length = {cfg['text']['max_sequence_length']}\n\n"
        f"[settings.long]\nheight = {d['long_height']}\nwidth = {d['long_width']}\nnum_frames = {d['long_frames']}\n"
    )
    plot_loss(loss_csv, artifacts / "transformer_loss.png")
    save_sample_grid(out, artifacts / "transformer_samples.png", cfg)
    print(f"[done] pipeline saved to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
