"""Declarative family adapters: what genaccel needs to know about each diffusers video pipeline.

An adapter recognises a loaded pipeline by its classes and states, as data, facts about it: where
the transformer blocks and attention layers are, how CFG runs, how attention is computed, the
latent layout, which frame counts and sizes are valid. Accelerators read these facts and decide
from them what they support (`genaccel.accelerators.unsupported_by`); they never branch on the
family name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from genaccel.errors import InputError

# A function (block 0, its hidden_states, its timestep embedding) -> the timestep-modulated input
# of block 0, the indicator TeaCache watches. None means "use the block's timestep embedding".
ModulatedInputFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FamilyAdapter:
    """Everything family-specific, in one declarative record."""

    name: str
    title: str
    pipeline_classes: tuple[str, ...]
    transformer_classes: tuple[str, ...]
    # How the pipeline runs classifier-free guidance: "separate" (cond and uncond are two
    # transformer passes) or "batched" (one pass on the two halves of a batch).
    cfg: str
    # Whether the attention processors call diffusers' `dispatch_attention_fn` (so a backend set
    # with `set_attention_backend` reaches them) rather than `F.scaled_dot_product_attention`.
    attention_dispatch: bool
    # What the compile accelerator compiles as one unit by default (`compile(scope=auto)`), chosen by
    # measurement: "blocks" (regional, as diffusers recommends: the fastest to compile) or "model".
    compile_scope: str = "blocks"
    # Pipeline attributes holding denoising transformers (Wan 2.2 has two experts).
    denoisers: tuple[str, ...] = ("transformer",)
    # Block lists; every pass runs blocks from these lists.
    block_lists: tuple[str, ...] = ("blocks",)
    # "sequential": the lists run one after another; "interleaved": one block of each list in
    # turn, with a different token layout per list (Latte's spatial and temporal blocks).
    block_order: str = "sequential"
    # The contiguous run of blocks whose input and output share one layout: a skipped pass
    # replaces it by `input + cached residual`. Written as "list.index".
    pass_head: str = "blocks.0"
    pass_tail: str = "blocks.-1"
    # Attribute names of attention modules inside a block.
    self_attention: tuple[str, ...] = ("attn1",)
    cross_attention: tuple[str, ...] = ("attn2",)
    temb_arg: str = "temb"  # name of the timestep embedding argument of a block's forward
    modulated_input: ModulatedInputFn | None = None  # TeaCache indicator; None = block temb
    # Generation constraints.
    frames_arg: str = "num_frames"
    frames_multiple: int = 4  # valid frame counts: frames_multiple * k + frames_offset
    frames_offset: int = 1
    # When set, the transformer config attribute fixing the frame count (Latte's learned
    # temporal position embedding): valid counts are that value, or 1.
    frames_config_attr: str = ""
    size_multiple: int = 16
    # Layout of the latents given to the transformer: "BCFHW", "BFCHW", or "BSC" (packed tokens).
    tensor_format: str = "BCFHW"
    # The TAEHV light decoders published for this family's VAE (madebyollin/taehv), named for the user ("": none,
    # and `decoder=light` is refused), and how they trim their first frames ("causal", or "cogvideox": every
    # frame of an even latent count is kept).
    light_decoders: str = ""
    light_decoder_trim: str = "causal"
    call_extra: dict = field(default_factory=dict)  # extra pipeline kwargs this family always needs
    # Published TeaCache rescale coefficients (highest degree first), by checkpoint.
    teacache_coefficients: dict[str, tuple[float, ...]] = field(default_factory=dict)
    teacache_default: str = ""  # key into teacache_coefficients used when nothing else is known
    teacache_warmup_steps: int = 1  # steps computed fully at the start of each CFG branch
    # The denoiser's module that projects the prompt embedding on every call ("" for none): with the
    # cross-attention key/value projections, what a stream computes once per prompt.
    text_projection: str = ""

    def __post_init__(self):
        if self.cfg not in ("separate", "batched"):
            raise ValueError(f"{self.name}: cfg must be 'separate' or 'batched', not {self.cfg!r}")
        if self.block_order not in ("sequential", "interleaved"):
            raise ValueError(
                f"{self.name}: block_order must be 'sequential' or 'interleaved', not {self.block_order!r}"
            )

    # ----------------------------------------------------------------- queries
    def matches(self, pipe) -> bool:
        names = {cls.__name__ for cls in type(pipe).__mro__}
        if names & set(self.pipeline_classes):
            transformer = getattr(pipe, self.denoisers[0], None)
            return transformer is None or type(transformer).__name__ in self.transformer_classes
        return False

    def denoiser_modules(self, pipe) -> list[tuple[str, torch.nn.Module]]:
        """The pipeline's denoising transformers that are present, as (attribute, module)."""
        found = []
        for attr in self.denoisers:
            module = getattr(pipe, attr, None)
            if isinstance(module, torch.nn.Module):
                found.append((attr, module))
        return found

    def blocks(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """All transformer blocks as (qualified name, block), list by list."""
        out = []
        for list_name in self.block_lists:
            for i, block in enumerate(getattr(transformer, list_name, None) or []):
                out.append((f"{list_name}.{i}", block))
        return out

    def block_at(self, transformer: torch.nn.Module, path: str) -> torch.nn.Module:
        list_name, index = path.rsplit(".", 1)
        return getattr(transformer, list_name)[int(index)]

    def pass_blocks(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        """Blocks from pass_head to pass_tail inclusive, in execution order."""
        head = self.block_at(transformer, self.pass_head)
        tail = self.block_at(transformer, self.pass_tail)
        order = self.execution_order(transformer)
        return order[order.index(head) : order.index(tail) + 1]

    def execution_order(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        lists = [list(getattr(transformer, n, None) or []) for n in self.block_lists]
        if self.block_order == "interleaved":
            return [b for group in zip(*lists) for b in group]
        return [b for blocks in lists for b in blocks]

    def attention_layers(self, transformer: torch.nn.Module, kind: str = "all") -> list[tuple[str, torch.nn.Module]]:
        """Attention modules of every block: kind is "self", "cross" or "all"."""
        attrs = {"self": self.self_attention, "cross": self.cross_attention}.get(
            kind, self.self_attention + self.cross_attention
        )
        out = []
        for name, block in self.blocks(transformer):
            for attr in attrs:
                module = getattr(block, attr, None)
                if isinstance(module, torch.nn.Module):
                    out.append((f"{name}.{attr}", module))
        return out

    def teacache_indicator(
        self, block0: torch.nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """What TeaCache watches: block 0's timestep-modulated input, or the block's temb."""
        if self.modulated_input is None:
            return temb
        with torch.no_grad():
            return self.modulated_input(block0, hidden_states, temb)

    def frames_rule(self, pipe=None) -> str:
        """Which frame counts this family makes, in words ("4k+1", "16 (fixed by the model)")."""
        if self.frames_config_attr:
            if pipe is not None:
                return (
                    f"{getattr(getattr(pipe, self.denoisers[0]).config, self.frames_config_attr)} (fixed by the model)"
                )
            return "fixed by the model"
        return (
            f"{self.frames_multiple}k+{self.frames_offset}"
            if self.frames_offset
            else f"a multiple of {self.frames_multiple}"
        )

    def fixed_frames(self, pipe) -> int | None:
        """The frame count a loaded pipeline's denoiser config fixes (Latte), or None."""
        if not self.frames_config_attr or pipe is None:
            return None
        return getattr(getattr(pipe, self.denoisers[0]).config, self.frames_config_attr)

    def check_frames(self, frames: int, pipe=None, *, fixed: int | None = None) -> None:
        """Raise InputError unless `frames` is a frame count this family (and pipeline) can make; `fixed`:
        the model's fixed frame count when known without the pipeline (read from its config file)."""
        fixed = fixed if fixed is not None else self.fixed_frames(pipe)
        if self.frames_config_attr and fixed is not None:
            if frames not in (1, fixed):
                raise InputError(f"frames {frames}: this {self.title} model makes {fixed} frames (or 1)")
            return
        if frames < 1 or (frames - self.frames_offset) % self.frames_multiple != 0:
            rule = self.frames_rule()
            lo = self.frames_offset or self.frames_multiple
            near = max(
                lo, (frames - self.frames_offset) // self.frames_multiple * self.frames_multiple + self.frames_offset
            )
            raise InputError(
                f"frames {frames}: {self.title} makes frame counts of the form {rule} "
                f"(e.g. {near} or {near + self.frames_multiple})"
            )

    def check_size(self, height: int, width: int) -> None:
        for label, value in (("height", height), ("width", width)):
            if value <= 0 or value % self.size_multiple:
                raise InputError(
                    f"{label} {value}: must be a positive multiple of {self.size_multiple} for {self.title}"
                )


# ---------------------------------------------------------------- modulated inputs (TeaCache indicators)
def _shift_scale_modulated(
    norm: torch.nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    return norm(x.float()) * (1 + scale) + shift


def wan_modulated_input(block, hidden_states, temb):
    """Wan: norm1(x) * (1 + scale_msa) + shift_msa, from block 0's scale_shift_table."""
    if temb.ndim == 4:  # per-token modulation (Wan 2.2 TI2V)
        mod = block.scale_shift_table.unsqueeze(0) + temb.float()
        shift, scale = mod[:, :, 0], mod[:, :, 1]
    else:
        shift, scale = (block.scale_shift_table + temb.float()).chunk(6, dim=1)[:2]
    return _shift_scale_modulated(block.norm1, hidden_states, shift, scale)


def hunyuan_modulated_input(block, hidden_states, temb):
    """HunyuanVideo: block 0's AdaLayerNormZero applied to x (its first output)."""
    return block.norm1(hidden_states, emb=temb)[0]


def ltx_modulated_input(block, hidden_states, temb):
    """LTX-Video: norm1(x) * (1 + scale_msa) + shift_msa with the block's scale_shift_table."""
    b = hidden_states.size(0)
    mod = block.scale_shift_table[None, None] + temb.reshape(b, temb.size(1), 6, -1)
    shift, scale = mod[:, :, 0], mod[:, :, 1]
    return block.norm1(hidden_states) * (1 + scale) + shift


def latte_modulated_input(block, hidden_states, timestep):
    """Latte (ada_norm_single): norm1(x) * (1 + scale_msa) + shift_msa."""
    b = hidden_states.size(0)
    shift, scale = (block.scale_shift_table[None] + timestep.reshape(b, 6, -1)).chunk(6, dim=1)[:2]
    return block.norm1(hidden_states) * (1 + scale) + shift


def mochi_modulated_input(block, hidden_states, temb):
    """Mochi: block 0's MochiRMSNormZero applied to x (its first output)."""
    return block.norm1(hidden_states, temb)[0]


# ---------------------------------------------------------------- the families
FAMILIES: dict[str, FamilyAdapter] = {}


def register_family(adapter: FamilyAdapter) -> FamilyAdapter:
    FAMILIES[adapter.name] = adapter
    return adapter


WAN = register_family(
    FamilyAdapter(
        name="wan",
        title="Wan 2.1/2.2",
        light_decoders="taew2_1 for Wan 2.1 and 2.2 A14B, taew2_2 for Wan 2.2 TI2V-5B",
        pipeline_classes=("WanPipeline",),
        transformer_classes=("WanTransformer3DModel",),
        cfg="separate",
        attention_dispatch=True,
        # the embedded model, end to end: the whole model 1.15x against eager, each block 1.05x (default
        # setting); 1.29x and 1.22x (long); with quant 1.47x and 1.35x (BENCHMARKS.md)
        compile_scope="model",
        denoisers=("transformer", "transformer_2"),
        modulated_input=wan_modulated_input,
        text_projection="condition_embedder.text_embedder",
        frames_multiple=4,
        frames_offset=1,
        size_multiple=16,
        teacache_coefficients={
            "wan2.1-t2v-1.3b": (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
            "wan2.1-t2v-14b": (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
        },
        teacache_default="wan2.1-t2v-1.3b",
    )
)

COGVIDEOX = register_family(
    FamilyAdapter(
        name="cogvideox",
        title="CogVideoX",
        light_decoders="taecvx",
        light_decoder_trim="cogvideox",
        pipeline_classes=("CogVideoXPipeline",),
        transformer_classes=("CogVideoXTransformer3DModel",),
        cfg="batched",
        attention_dispatch=False,
        block_lists=("transformer_blocks",),
        pass_head="transformer_blocks.0",
        pass_tail="transformer_blocks.-1",
        self_attention=("attn1",),
        cross_attention=(),  # text and video tokens share one joint attention
        modulated_input=None,  # TeaCache watches the (unmodulated) time embedding
        frames_multiple=8,
        frames_offset=1,
        size_multiple=16,
        tensor_format="BFCHW",
        teacache_coefficients={
            "cogvideox-2b": (-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03),
            "cogvideox-5b": (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
            "cogvideox1.5-5b": (2.50210439e02, -1.65061612e02, 3.57804877e01, -7.81551492e-01, 3.58559703e-02),
        },
        teacache_default="cogvideox-2b",
    )
)

HUNYUANVIDEO = register_family(
    FamilyAdapter(
        name="hunyuanvideo",
        title="HunyuanVideo",
        light_decoders="taehv",
        pipeline_classes=("HunyuanVideoPipeline",),
        transformer_classes=("HunyuanVideoTransformer3DModel",),
        cfg="separate",
        attention_dispatch=True,
        block_lists=("transformer_blocks", "single_transformer_blocks"),
        pass_head="transformer_blocks.0",
        pass_tail="single_transformer_blocks.-1",
        self_attention=("attn",),
        cross_attention=(),
        modulated_input=hunyuan_modulated_input,
        frames_multiple=4,
        frames_offset=1,
        size_multiple=16,
        teacache_coefficients={
            "hunyuanvideo": (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02),
        },
        teacache_default="hunyuanvideo",
    )
)

LTX = register_family(
    FamilyAdapter(
        name="ltx",
        title="LTX-Video",
        pipeline_classes=("LTXPipeline",),
        transformer_classes=("LTXVideoTransformer3DModel",),
        cfg="batched",
        attention_dispatch=True,
        block_lists=("transformer_blocks",),
        pass_head="transformer_blocks.0",
        pass_tail="transformer_blocks.-1",
        modulated_input=ltx_modulated_input,
        frames_multiple=8,
        frames_offset=1,
        size_multiple=32,
        tensor_format="BSC",
        teacache_coefficients={
            "ltx-video-0.9.1": (2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03),
        },
        teacache_default="ltx-video-0.9.1",
    )
)

LATTE = register_family(
    FamilyAdapter(
        name="latte",
        title="Latte",
        pipeline_classes=("LattePipeline",),
        transformer_classes=("LatteTransformer3DModel",),
        cfg="batched",
        attention_dispatch=False,
        block_lists=("transformer_blocks", "temporal_transformer_blocks"),
        # Spatial and temporal blocks alternate, with a token re-layout in between: the run that
        # starts and ends in the spatial layout is spatial 0 .. spatial N-1; the final temporal
        # block always runs.
        block_order="interleaved",
        pass_head="transformer_blocks.0",
        pass_tail="transformer_blocks.-1",
        temb_arg="timestep",
        modulated_input=latte_modulated_input,
        frames_arg="video_length",
        frames_multiple=1,
        frames_offset=0,
        frames_config_attr="video_length",
        size_multiple=16,
        call_extra={"clean_caption": False},
        teacache_coefficients={
            "latte": (-2.46434137e03, 3.08044764e02, 8.07447667e01, -4.11385132e00, 1.11001402e-01),
        },
        teacache_default="latte",
    )
)

MOCHI = register_family(
    FamilyAdapter(
        name="mochi",
        title="Mochi",
        pipeline_classes=("MochiPipeline",),
        transformer_classes=("MochiTransformer3DModel",),
        cfg="batched",
        attention_dispatch=False,
        block_lists=("transformer_blocks",),
        pass_head="transformer_blocks.0",
        pass_tail="transformer_blocks.-1",
        self_attention=("attn1",),
        cross_attention=(),
        modulated_input=mochi_modulated_input,
        frames_multiple=6,
        frames_offset=1,
        size_multiple=16,
        teacache_coefficients={
            "mochi": (-3.51241319e03, 8.11675948e02, -6.09400215e01, 2.42429681e00, 3.05291719e-03),
        },
        teacache_default="mochi",
    )
)


def family_of(pipe) -> FamilyAdapter:
    """The adapter that recognises `pipe`, or a ModelError naming the supported families."""
    from genaccel.errors import ModelError

    for adapter in FAMILIES.values():
        if adapter.matches(pipe):
            return adapter
    supported = ", ".join(a.title for a in FAMILIES.values())
    raise ModelError(f"{type(pipe).__name__} is not a supported video pipeline (supported: {supported})")
