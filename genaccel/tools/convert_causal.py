"""Causal Wan checkpoints (Self-Forcing, CausVid, LongLive) to a genaccel streaming model folder.

These models keep the original Wan 2.1 module names (`blocks.N.self_attn.q`, `ffn.0`, `head.head`, ...),
usually under a wrapper prefix (`model.`) inside a training checkpoint (`{"generator_ema": {...}}`). Their
weights are a Wan2.1-T2V-1.3B transformer fine-tuned to attend block-causally; the rest of the pipeline
(text encoder, VAE) is the base model's. `convert_causal_checkpoint` renames the tensors to diffusers'
`WanTransformer3DModel` layout, infers its config from the shapes, saves it with safetensors, and writes a
genaccel.toml naming the user's diffusers Wan pipeline folder as `base` with a [stream] table, so

    genaccel convert-causal self_forcing_dmd.pt --base ./Wan2.1-T2V-1.3B-Diffusers --out ./self-forcing
    genaccel stream "a cat surfing" --model ./self-forcing --device cuda --out cat.mp4

`.safetensors` checkpoints load directly; `.pt` files only through torch's weights-only loader (tensors and
plain containers, never arbitrary pickled objects).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from genaccel.errors import InputError

# Wrapper prefixes training code adds in front of the model's own names.
PREFIXES = ("module.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.", "model.")
# Checkpoint entries that hold the generator's weights, best first.
STATE_KEYS = ("generator_ema", "generator", "state_dict", "model")

# Original Wan name (regex on the whole key) -> diffusers name; \1 is the block index where there is one.
_ATTENTION = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k"}
RENAMES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^patch_embedding\.(weight|bias)$", r"patch_embedding.\1"),
        (r"^text_embedding\.0\.(weight|bias)$", r"condition_embedder.text_embedder.linear_1.\1"),
        (r"^text_embedding\.2\.(weight|bias)$", r"condition_embedder.text_embedder.linear_2.\1"),
        (r"^time_embedding\.0\.(weight|bias)$", r"condition_embedder.time_embedder.linear_1.\1"),
        (r"^time_embedding\.2\.(weight|bias)$", r"condition_embedder.time_embedder.linear_2.\1"),
        (r"^time_projection\.1\.(weight|bias)$", r"condition_embedder.time_proj.\1"),
        (r"^head\.head\.(weight|bias)$", r"proj_out.\1"),
        (r"^head\.modulation$", r"scale_shift_table"),
        (r"^blocks\.(\d+)\.modulation$", r"blocks.\1.scale_shift_table"),
        # The original's norm3 is the affine norm before cross-attention: diffusers' norm2.
        (r"^blocks\.(\d+)\.norm3\.(weight|bias)$", r"blocks.\1.norm2.\2"),
        (r"^blocks\.(\d+)\.ffn\.0\.(weight|bias)$", r"blocks.\1.ffn.net.0.proj.\2"),
        (r"^blocks\.(\d+)\.ffn\.2\.(weight|bias)$", r"blocks.\1.ffn.net.2.\2"),
        *(
            (rf"^blocks\.(\d+)\.{src}\.{o}\.(weight|bias)$", rf"blocks.\1.{dst}.{d}.\2")
            for src, dst in (("self_attn", "attn1"), ("cross_attn", "attn2"))
            for o, d in _ATTENTION.items()
        ),
    )
)


def strip_prefixes(state: dict) -> dict:
    """Drop wrapper prefixes (model., _fsdp_wrapped_module., ...) shared by every key."""
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def rename_state_dict(state: dict) -> dict:
    """Original Wan names -> diffusers `WanTransformer3DModel` names; InputError on a key of neither."""
    out, unknown = {}, []
    for key, value in strip_prefixes(state).items():
        for pattern, replacement in RENAMES:
            if pattern.match(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise InputError(f"not a Wan transformer checkpoint: unknown tensor name(s) {shown}")
    return out


def infer_config(state: dict, head_dim: int = 128) -> dict:
    """`WanTransformer3DModel` config from converted tensors' shapes (heads: width / `head_dim`)."""
    try:
        patch = state["patch_embedding.weight"]
        dim, in_channels = patch.shape[:2]
        patch_size = tuple(int(p) for p in patch.shape[2:])
        layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        out_channels = state["proj_out.weight"].shape[0] // (patch_size[0] * patch_size[1] * patch_size[2])
        config = dict(
            patch_size=patch_size,
            num_attention_heads=dim // head_dim,
            attention_head_dim=head_dim,
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            text_dim=int(state["condition_embedder.text_embedder.linear_1.weight"].shape[1]),
            freq_dim=int(state["condition_embedder.time_embedder.linear_1.weight"].shape[1]),
            ffn_dim=int(state["blocks.0.ffn.net.0.proj.weight"].shape[0]),
            num_layers=layers,
            cross_attn_norm="blocks.0.norm2.weight" in state,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise InputError(f"not a Wan transformer checkpoint: missing {exc}") from None
    if dim % head_dim:
        raise InputError(f"the model width {dim} is not a multiple of the head size {head_dim} (set --head-dim)")
    return config


def load_checkpoint_tensors(path: Path) -> dict:
    """The generator's tensors from a .safetensors file or a .pt checkpoint (weights-only loader)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise InputError(f"expected a .safetensors or .pt checkpoint; got '{path.name}'")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # the weights-only unpickler refuses anything but tensors and containers
        raise InputError(f"cannot read {path.name} with the weights-only loader: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict):
        for key in STATE_KEYS:
            if isinstance(data.get(key), dict):
                return data[key]
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise InputError(f"{path.name}: no generator weights found (looked for {', '.join(STATE_KEYS)})")


def convert_causal_checkpoint(
    checkpoint: Path,
    base: Path,
    out: Path,
    *,
    chunk_frames: int = 3,
    window: int = 15,
    sink: int = 3,
    timesteps: tuple[int, ...] = (1000, 750, 500, 250),
    shift: float = 5.0,
    head_dim: int = 128,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write a streaming model folder: out/transformer (safetensors) and out/genaccel.toml. Defaults are
    Self-Forcing's: chunks of 3 latent frames, 4 steps at timesteps 1000/750/500/250 (flow shift 5) without
    CFG, and a 21-frame span (window 15 + sink 3 + the chunk)."""
    from diffusers import WanTransformer3DModel

    base, out = Path(base).resolve(), Path(out)
    if not (base / "model_index.json").is_file():
        raise InputError(f"--base {base} is not a diffusers Wan pipeline folder (no model_index.json)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty")
    state = rename_state_dict(load_checkpoint_tensors(checkpoint))
    config = infer_config(state, head_dim)
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise InputError(f"the checkpoint lacks {len(missing)} tensor(s) of the model, e.g. {sorted(missing)[0]}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    tmp = out.with_name(f".{out.name}.converting")
    try:
        _write_folder(tmp, model, base, chunk_frames, window, sink, timesteps, shift)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, never the user's
        raise
    return out


def _write_folder(tmp: Path, model, base: Path, chunk_frames, window, sink, timesteps, shift) -> None:
    model.save_pretrained(tmp / "transformer", safe_serialization=True)
    settings = {
        "height": 480,
        "width": 832,
        "num_frames": 81,
        "num_inference_steps": len(timesteps),
        "guidance_scale": 1.0,
    }
    lines = (
        [
            "# A causal Wan model converted by genaccel convert-causal: its transformer here, the rest from base.",
            f"base = {json.dumps(str(base))}",
        ]
        + [f"{k} = {v}" for k, v in settings.items()]
        + [
            "",
            "[stream]",
            f"chunk_frames = {chunk_frames}",
            f"window = {window}",
            f"sink = {sink}",
            f"timesteps = {list(timesteps)}",
            f"shift = {shift}",
        ]
    )
    (tmp / "genaccel.toml").write_text("\n".join(lines) + "\n")
