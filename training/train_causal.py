"""Fine-tune the embedded transformer into the block-causal streaming model (issue 19).

    python training/train_causal.py --config training/configs/causal.toml --resume

Starts from the shipped bidirectional transformer (pipelines/embedded) and teaches it to continue a clip
chunk by chunk, the way `genaccel stream` runs it: chunk i of latent frames is denoised while attending
to the clean keys/values of earlier chunks (a cache) and to itself, never to later chunks.

Teacher forcing in one pass (as CausVid trains): the sequence is [context frames | noisy frames], both
halves at the same rotary positions; a context frame attends context frames of its own and earlier chunks
(the cache's keys), a noisy frame attends context frames of earlier chunks plus its own noisy chunk. Every
noisy frame has its own noise level (per-token timesteps), the context is at timestep 0 (the commit pass
of streaming), and the loss covers the noisy half only.

Two things make the context look like what streaming feeds the model:
- Own-prediction context (a cheap stand-in for Self-Forcing's rollouts, which need a distillation teacher
  this CPU cannot afford): with probability `own_context`, the context frames are the model's own one-step
  estimate of the clean clip from a noised copy (no gradient), so it learns to continue from imperfect
  frames it made itself while the target stays the real continuation.
- Sink gaps: with probability `sink_gap`, frames 1..g are dropped and the rest renumbered, the picture a
  rolling cache gives (the first frame kept as a sink, then a recent window right after it).

The EMA transformer is saved to `output_dir/transformer` (safetensors, Wan format), next to a genaccel.toml
that names the base pipeline for the other components and declares the block-causal attention.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from train_transformer import (  # noqa: E402
    build_latent_cache,
    grammar_embeddings,
    load_config,
    lr_at,
    plot_loss,
    resume,
    sample_sigmas,
    start_loss_csv,
    training_parser,
    update,
)


def teacher_forcing_mask(frames: int, tokens_per_frame: int, chunk_frames: int) -> torch.Tensor:
    """(2S, 2S) bool over [context | noisy] tokens: True where a query may attend a key."""
    chunk = torch.arange(frames).repeat_interleave(tokens_per_frame) // chunk_frames
    earlier_or_same = chunk[:, None] >= chunk[None, :]
    earlier = chunk[:, None] > chunk[None, :]
    same = chunk[:, None] == chunk[None, :]
    top = torch.cat([earlier_or_same, torch.zeros_like(same)], dim=1)  # context queries
    bottom = torch.cat([earlier, same], dim=1)  # noisy queries
    return torch.cat([top, bottom], dim=0)


class MaskedSelfAttention:
    """Wraps a Wan self-attention processor with a fixed boolean mask (set before each forward)."""

    def __init__(self, processor):
        self.processor = processor
        self.mask = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return self.processor(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


class SharedPositionsRope(torch.nn.Module):
    """Rotary embedding for [context | noisy] frames that share positions 0..F-1 (else as the original)."""

    def __init__(self, rope):
        super().__init__()
        self.rope = rope
        self.doubled = False

    def forward(self, hidden_states):
        if not self.doubled:
            return self.rope(hidden_states)
        cos, sin = self.rope(hidden_states[:, :, : hidden_states.shape[2] // 2])
        return torch.cat([cos, cos], dim=1), torch.cat([sin, sin], dim=1)


def pick_frames(frames: int, gap: int) -> torch.Tensor:
    """Frame indices of a sink-gap sample: frame 0, then frames gap+1.. (gap 0: every frame)."""
    return torch.cat([torch.tensor([0]), torch.arange(gap + 1, frames)])


def main() -> int:
    args = training_parser(
        __doc__, "training/configs/causal.toml", "skip training, save the transformer from the checkpoint"
    ).parse_args()
    cfg, run_dir, artifacts = load_config(args)

    from diffusers import WanPipeline, WanTransformer3DModel

    base = ROOT / cfg["init_from"]
    pipe = WanPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer.train().requires_grad_(True)
    max_len = cfg["text"]["max_sequence_length"]
    embeds, prompt_index, empty_index = grammar_embeddings(pipe, max_len)
    latents, prompts = build_latent_cache(cfg, pipe.vae, run_dir, "default")
    ids = torch.tensor([prompt_index[p] for p in prompts])
    print(f"[data] latents {tuple(latents.shape)}", flush=True)

    chunk_frames = cfg["model"]["chunk_frames"]
    wrappers = []
    for block in transformer.blocks:
        wrappers.append(MaskedSelfAttention(block.attn1.processor))
        block.attn1.set_processor(wrappers[-1])
    rope = SharedPositionsRope(transformer.rope)
    transformer.rope = rope
    ema = copy.deepcopy(transformer).requires_grad_(False)
    t = cfg["train"]
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=t["lr"], weight_decay=t["weight_decay"], betas=(0.9, 0.99)
    )
    generator = torch.Generator().manual_seed(cfg["seed"])
    step, rewarm_from, _ = resume(args, cfg, run_dir, {"model": transformer, "ema": ema}, optimizer, generator)
    loss_csv = artifacts / "causal_loss.csv"
    start_loss_csv(loss_csv, "step,loss,frames,own_context,lr,seconds", step, args.finalize_only)
    _, channels, frames, height, width = latents.shape
    tokens_per_frame = (height // 2) * (width // 2)
    masks: dict[int, torch.Tensor] = {}
    last_ckpt = time.time()
    bar = tqdm(total=t["steps"], initial=step, desc="causal", unit="step", disable=args.finalize_only)
    while step < t["steps"] and not args.finalize_only:
        start = time.perf_counter()
        batch = t["batch"]
        pick = torch.randint(len(latents), (batch,), generator=generator)
        gap = 0
        if torch.rand((), generator=generator) < t["sink_gap"]:
            gap = int(torch.randint(1, frames - 2, (), generator=generator))
        x0 = latents[pick][:, :, pick_frames(frames, gap)]
        f = x0.shape[2]
        text = ids[pick].clone()
        text[torch.rand(batch, generator=generator) < t["caption_dropout"]] = empty_index
        context_embeds = embeds[text]
        noise = torch.randn(x0.shape, generator=generator)
        sigma = sample_sigmas(batch * f, t["logit_normal_fraction"], generator, t["timestep_shift"]).view(
            batch, 1, f, 1, 1
        )
        xt = (1 - sigma) * x0 + sigma * noise
        if f not in masks:
            masks[f] = teacher_forcing_mask(f, tokens_per_frame, chunk_frames)
        own = bool(torch.rand((), generator=generator) < t["own_context"])
        context = x0
        if own:  # the model's own one-step estimate of the clip, block-causally, from a noised copy
            s_ctx = t["own_sigma"][0] + (t["own_sigma"][1] - t["own_sigma"][0]) * torch.rand(
                batch, 1, f, 1, 1, generator=generator
            )
            noisy_ctx = (1 - s_ctx) * x0 + s_ctx * torch.randn(x0.shape, generator=generator)
            causal = teacher_forcing_mask(f, tokens_per_frame, chunk_frames)[
                : f * tokens_per_frame, : f * tokens_per_frame
            ]
            for w in wrappers:
                w.mask = causal
            rope.doubled = False
            with torch.no_grad():
                ts = (s_ctx * 1000).expand(batch, 1, f, 1, 1).repeat_interleave(tokens_per_frame, dim=2).view(batch, -1)
                v = transformer(noisy_ctx, ts, context_embeds, return_dict=False)[0]
            context = noisy_ctx - s_ctx * v
        for w in wrappers:
            w.mask = masks[f]
        rope.doubled = True
        timestep = torch.cat([torch.zeros(batch, f), sigma.view(batch, f) * 1000], dim=1)
        timestep = timestep.repeat_interleave(tokens_per_frame, dim=1)
        lr = lr_at(step, cfg, rewarm_from)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pred = transformer(torch.cat([context, xt], dim=2), timestep, context_embeds, return_dict=False)[0][:, :, f:]
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        update(transformer, ema, optimizer, loss, step, t["ema_decay"])
        step += 1
        with loss_csv.open("a") as fh:
            fh.write(f"{step},{loss.item():.6f},{f},{int(own)},{lr:.3e},{time.perf_counter() - start:.3f}\n")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if time.time() - last_ckpt > 60 * cfg["checkpoint_minutes"] or step == t["steps"]:
            save_checkpoint(
                run_dir / "checkpoint.safetensors",
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

    ckpt_path = run_dir / "checkpoint.safetensors"
    if not ckpt_path.is_file() and cfg.get("resume_from"):
        ckpt_path = ROOT / cfg["resume_from"]  # the committed weights-only export
    final = WanTransformer3DModel.from_config(pipe.transformer.config)
    final.rope = SharedPositionsRope(final.rope)  # so the checkpoint's module names line up
    load_checkpoint(ckpt_path, modules={"ema": final})
    final.rope = final.rope.rope
    out = ROOT / cfg["output_dir"]
    final.eval().save_pretrained(out / "transformer", safe_serialization=True)
    s = cfg["stream"]
    (out / "genaccel.toml").write_text(
        "# The block-causal streaming variant of the embedded model. Only the transformer is its own; the\n"
        "# tokenizer, text encoder, VAE and scheduler come from `base`. genaccel installs block-causal attention\n"
        "# for it ([stream] attention) and streams it chunk by chunk: genaccel stream --model tiny-causal.\n"
        f'base = "../{Path(cfg["init_from"]).name}"\n'
        f"height = {height * 4}\nwidth = {width * 4}\nnum_frames = {4 * (frames - 1) + 1}\n"
        f"num_inference_steps = {s['steps']}\nguidance_scale = {s['guidance']}\n\n"
        f"[extra]\nmax_sequence_length = {max_len}\n\n"
        f'[stream]\nattention = "block_causal"\nchunk_frames = {chunk_frames}\n'
        f"window = {s['window']}\nsink = {s['sink']}\n"
    )
    plot_loss(loss_csv, artifacts / "causal_loss.png", "block-causal fine-tune (teacher forcing, noisy half)")
    print(f"[done] causal transformer saved to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
