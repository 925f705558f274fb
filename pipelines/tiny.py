"""Tiny random-weight diffusers text-to-video pipelines, built in code, for tests.

One builder per family; nothing is downloaded (text encoders come from configs, tokenizers from
:mod:`genaccel.pipelines.tokenizer`). Every pipeline is float32, deterministic for a seed, runs an 8-step
generation with classifier-free guidance in a fraction of a second on CPU, and each transformer block list
has 3 blocks so that first/last-block caching has a middle.

The generic call used by the project (``<frames kwarg>`` is ``num_frames``, except ``video_length`` for Latte)::

    d = TINY_CALL_DEFAULTS[name]
    pipe(prompt=..., negative_prompt=..., height=d["height"], width=d["width"], num_frames=d["num_frames"],
         num_inference_steps=d["num_inference_steps"], guidance_scale=d["guidance_scale"],
         generator=torch.Generator("cpu").manual_seed(0), output_type="np", **d["extra"])

:func:`tiny_call_kwargs` builds exactly that dict. With ``output_type="np"`` every family returns
``output.frames`` as a float32 array of shape (batch, frames, height, width, 3) in [0, 1];
:func:`frames_to_array` turns any output (np / pt / pil, object or tuple) into (frames, height, width, 3).

CFG layout differs: Wan and HunyuanVideo run the conditional and unconditional passes as two batch-1
transformer forwards per step; CogVideoX, LTX, Latte and Mochi run one batch-2 forward (uncond first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    DDIMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LattePipeline,
    LatteTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    MochiPipeline,
    MochiTransformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from genaccel.pipelines.shapes import EXAMPLE_PROMPT

from .tokenizer import build_word_tokenizer

TINY_FAMILIES: tuple[str, ...] = ("wan", "wan22", "cogvideox", "hunyuanvideo", "ltx", "latte", "mochi")

# ---------------------------------------------------------------------------------------------------------
# Sizes: 32x32 pixels -> 8x smaller latents -> 2x2 transformer tokens per frame (4x4 for LTX, patch size 1);
# 2-3 latent frames (Latte: 4 frames, 2D VAE). One 8-step CFG generation takes < 0.2 s on 2 CPU cores.
# ---------------------------------------------------------------------------------------------------------

TEXT_LEN = 16  # max_sequence_length given to the pipelines; CogVideoX's transformer needs it to match exactly
TEXT_DIM = 32  # hidden size of the tiny T5 / UMT5 (the transformers' text_dim / caption_channels)

T5_CONFIG = dict(
    d_model=TEXT_DIM,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
)
# Hunyuan reads the Llama's hidden_states[-3] (>= 2 layers) and pads CLIP prompts to 77 tokens.
LLAMA_CONFIG = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
CLIP_CONFIG = dict(
    hidden_size=8,
    intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=8,
    max_position_embeddings=77,
)

WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=32,
    ffn_dim=32,
    num_layers=3,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
WAN_VAE = dict(
    base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
)  # 8x spatial, 4x temporal like the real one
WAN_SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
WAN22_BOUNDARY_RATIO = 0.875  # Wan 2.2 A14B T2V: `transformer` for t >= 875, `transformer_2` below

COGVIDEOX_TRANSFORMER = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    time_embed_dim=8,
    text_embed_dim=TEXT_DIM,
    num_layers=3,
    sample_width=4,
    sample_height=4,
    sample_frames=9,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=TEXT_LEN,
)
COGVIDEOX_VAE = dict(
    block_out_channels=(8, 8, 8, 8),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=2,
    temporal_compression_ratio=4,
)
COGVIDEOX_SCHEDULER = dict(
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    clip_sample=False,
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)  # CogVideoX-2b's

HUNYUAN_TRANSFORMER = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=3,
    num_single_layers=3,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    guidance_embeds=True,
    text_embed_dim=LLAMA_CONFIG["hidden_size"],
    pooled_projection_dim=CLIP_CONFIG["hidden_size"],
    rope_axes_dim=(2, 4, 4),
)
HUNYUAN_VAE = dict(
    latent_channels=4,
    block_out_channels=(8, 8, 8, 8),
    layers_per_block=1,
    norm_num_groups=4,
    spatial_compression_ratio=8,
    temporal_compression_ratio=4,
)

LTX_TRANSFORMER = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=4,
    attention_head_dim=8,
    cross_attention_dim=32,
    num_layers=3,
    caption_channels=TEXT_DIM,
)
LTX_VAE = dict(
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False),
    patch_size=1,
    patch_size_t=1,
)  # 8x spatial, 8x temporal (the real VAE is 32x via patch_size=4)

LATTE_TRANSFORMER = dict(
    sample_size=4,
    num_layers=3,
    patch_size=2,
    attention_head_dim=8,
    num_attention_heads=3,
    caption_channels=TEXT_DIM,
    in_channels=4,
    cross_attention_dim=24,
    out_channels=8,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    video_length=4,
)  # Latte adds a fixed temporal embedding: frames must equal video_length
LATTE_VAE = dict(
    block_out_channels=(8, 8, 8, 8),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
)

MOCHI_TRANSFORMER = dict(
    patch_size=2,
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=3,
    pooled_projection_dim=16,
    in_channels=12,
    text_embed_dim=TEXT_DIM,
    time_embed_dim=4,
    max_sequence_length=TEXT_LEN,
)
MOCHI_VAE = dict(
    latent_channels=12,
    encoder_block_out_channels=(32, 32, 32, 32),  # 12 latents: latents_mean
    decoder_block_out_channels=(32, 32, 32, 32),
    layers_per_block=(1, 1, 1, 1, 1),  # group norm 32
    add_attention_block=(False,) * 5,
)  # the pipeline hard-codes 8x spatial and 6x temporal

_CALL = dict(num_inference_steps=8, guidance_scale=5.0)
# Tiny pipelines named otherwise than their family.
TINY_FAMILY = {"wan22": "wan"}

TINY_CALL_DEFAULTS: dict[str, dict[str, Any]] = {
    # Frame counts that come back unchanged: Wan and Hunyuan 4k+1 (Wan rounds others with a warning, Hunyuan
    # silently returns fewer); CogVideoX 8k+1 (its VAE decodes latent frames in pairs: 5 -> 8, 13 -> 16 frames);
    # LTX 8k+1; Mochi 6k+1; Latte exactly LATTE_TRANSFORMER["video_length"] (or 1), any other count raises.
    # max_sequence_length everywhere: the default (226-512) would pad prompts far beyond the tiny text length.
    "wan": {"height": 32, "width": 32, "num_frames": 9, **_CALL, "extra": {"max_sequence_length": TEXT_LEN}},
    "wan22": {"height": 32, "width": 32, "num_frames": 9, **_CALL, "extra": {"max_sequence_length": TEXT_LEN}},
    "cogvideox": {
        "height": 32,
        "width": 32,
        "num_frames": 9,
        **_CALL,
        "extra": {"max_sequence_length": TEXT_LEN},
    },  # must equal max_text_seq_length
    # HunyuanVideo: guidance_scale is the *embedded* (distilled) guidance; real CFG with the negative prompt only
    # runs when true_cfg_scale > 1. The default prompt template crops its first 95 tokens (its length with the
    # real Llama tokenizer), which with the word tokenizer would crop the prompt itself away: use a bare template.
    "hunyuanvideo": {
        "height": 32,
        "width": 32,
        "num_frames": 9,
        **_CALL,
        "extra": {
            "max_sequence_length": TEXT_LEN,
            "true_cfg_scale": _CALL["guidance_scale"],
            "prompt_template": {"template": "{}", "crop_start": 0},
        },
    },
    "ltx": {"height": 32, "width": 32, "num_frames": 9, **_CALL, "extra": {"max_sequence_length": TEXT_LEN}},
    # Latte: the frame count is fixed by the transformer; its text length is fixed at 120 and masked to the
    # prompt's length (its family record adds clean_caption=False to every call).
    "latte": {"height": 32, "width": 32, "num_frames": LATTE_TRANSFORMER["video_length"], **_CALL, "extra": {}},
    "mochi": {"height": 32, "width": 32, "num_frames": 7, **_CALL, "extra": {"max_sequence_length": TEXT_LEN}},
}


# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


def _seeded(seed: int, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Build one component right after ``torch.manual_seed(seed)``; modules are put in eval mode."""
    torch.manual_seed(seed)
    module = factory(*args, **kwargs)
    return module.eval() if isinstance(module, torch.nn.Module) else module


def _t5(seed: int, umt5: bool = False) -> dict[str, Any]:
    """Tiny T5 (or UMT5, for Wan) encoder and its word tokenizer, as pipeline components."""
    tokenizer = build_word_tokenizer(style="t5")
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **T5_CONFIG,
    )
    return {"tokenizer": tokenizer, "text_encoder": _seeded(seed, model_cls, config)}


def _special_ids(tokenizer) -> dict[str, int]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "vocab_size": len(tokenizer),
    }


# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def _build_wan(seed: int, two_experts: bool = False) -> WanPipeline:
    experts = {}
    if two_experts:  # Wan 2.2: high-noise `transformer`, low-noise `transformer_2` (distinct weights)
        experts = {
            "transformer_2": _seeded(seed + 1, WanTransformer3DModel, **WAN_TRANSFORMER),
            "boundary_ratio": WAN22_BOUNDARY_RATIO,
        }
    return WanPipeline(
        **_t5(seed, umt5=True),
        vae=_seeded(seed, AutoencoderKLWan, **WAN_VAE),
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
        transformer=_seeded(seed, WanTransformer3DModel, **WAN_TRANSFORMER),
        **experts,
    )


def _build_wan22(seed: int) -> WanPipeline:
    return _build_wan(seed, two_experts=True)


def _build_cogvideox(seed: int) -> CogVideoXPipeline:
    return CogVideoXPipeline(
        **_t5(seed),
        vae=_seeded(seed, AutoencoderKLCogVideoX, **COGVIDEOX_VAE),
        transformer=_seeded(seed, CogVideoXTransformer3DModel, **COGVIDEOX_TRANSFORMER),
        scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER),
    )


def _build_hunyuanvideo(seed: int) -> HunyuanVideoPipeline:
    llama_tok = build_word_tokenizer(style="llama")
    clip_tok = build_word_tokenizer(style="clip")
    return HunyuanVideoPipeline(
        tokenizer=llama_tok,
        text_encoder=_seeded(seed, LlamaModel, LlamaConfig(**LLAMA_CONFIG, **_special_ids(llama_tok))),
        tokenizer_2=clip_tok,
        text_encoder_2=_seeded(seed, CLIPTextModel, CLIPTextConfig(**CLIP_CONFIG, **_special_ids(clip_tok))),
        vae=_seeded(seed, AutoencoderKLHunyuanVideo, **HUNYUAN_VAE),
        transformer=_seeded(seed, HunyuanVideoTransformer3DModel, **HUNYUAN_TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )


def _build_ltx(seed: int) -> LTXPipeline:
    vae = _seeded(seed, AutoencoderKLLTXVideo, **LTX_VAE)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return LTXPipeline(
        **_t5(seed),
        vae=vae,
        transformer=_seeded(seed, LTXVideoTransformer3DModel, **LTX_TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def _build_latte(seed: int) -> LattePipeline:
    return LattePipeline(
        **_t5(seed),
        vae=_seeded(seed, AutoencoderKL, **LATTE_VAE),
        transformer=_seeded(seed, LatteTransformer3DModel, **LATTE_TRANSFORMER),
        scheduler=DDIMScheduler(),
    )


def _build_mochi(seed: int) -> MochiPipeline:
    return MochiPipeline(
        **_t5(seed),
        vae=_seeded(seed, AutoencoderKLMochi, **MOCHI_VAE),
        transformer=_seeded(seed, MochiTransformer3DModel, **MOCHI_TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


_BUILDERS: dict[str, Callable[[int], DiffusionPipeline]] = {
    "wan": _build_wan,
    "wan22": _build_wan22,
    "cogvideox": _build_cogvideox,
    "hunyuanvideo": _build_hunyuanvideo,
    "ltx": _build_ltx,
    "latte": _build_latte,
    "mochi": _build_mochi,
}


def build_tiny_pipeline(name: str, seed: int = 0) -> DiffusionPipeline:
    """Build the tiny random-weight pipeline of family ``name`` (one of :data:`TINY_FAMILIES`), float32, CPU."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown tiny pipeline {name!r}; expected one of {TINY_FAMILIES}")
    return _BUILDERS[name](seed)  # every component is created in float32 (no .to(): it warns on Wan)


def tiny_call_kwargs(
    name: str,
    prompt: str = EXAMPLE_PROMPT,
    negative_prompt: str = "blurry, low quality",
    seed: int = 0,
    **overrides: Any,
) -> dict:
    """The direct diffusers call for tiny pipeline ``name``: :data:`TINY_CALL_DEFAULTS` with its extras and
    its family's (the frame argument's name, extra arguments), as genaccel's preparation builds it."""
    from genaccel.pipelines.families import FAMILIES

    d = TINY_CALL_DEFAULTS[name]
    family = FAMILIES[TINY_FAMILY.get(name, name)]
    kwargs = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "height": d["height"],
        "width": d["width"],
        family.frames_arg: d["num_frames"],
        "num_inference_steps": d["num_inference_steps"],
        "guidance_scale": d["guidance_scale"],
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
        **d["extra"],
        **family.call_extra,
    }
    kwargs.update(overrides)
    return kwargs


def frames_to_array(output: Any) -> np.ndarray:
    """First video of a pipeline output as a float32 array (frames, height, width, 3) in [0, 1].

    Accepts the output object or ``return_dict=False`` tuple, or ``.frames`` itself, for every output_type:
    "np" (batch, F, H, W, 3) array, "pt" (batch, F, 3, H, W) tensor, "pil" list of lists of images.
    """
    frames = getattr(output, "frames", output)
    if isinstance(frames, tuple):
        frames = frames[0]
    if isinstance(frames, torch.Tensor):
        video = frames[0] if frames.ndim == 5 else frames
        video = video.permute(0, 2, 3, 1).float().cpu().numpy()
    elif isinstance(frames, np.ndarray):
        video = frames[0] if frames.ndim == 5 else frames
    else:  # PIL
        video = frames[0] if isinstance(frames[0], (list, tuple)) else frames
        video = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in video])
    return np.asarray(video, dtype=np.float32)
