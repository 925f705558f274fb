"""Token merging (ToMe) for video transformers: merge the video tokens entering a block's self-attention
(and, optionally, its feed-forward), restore them at its output.

`TokenMergeHook` sits on one module, a block's self-attention or feed-forward. Before the module runs it
merges a share `ratio` of the video tokens of its `hidden_states` into one destination per 3-D cell (the
math is genaccel/tokens/matching.py), so the projections, the attention and the output projection (or the
whole feed-forward) run on fewer tokens; after, every merged token gets its destination's output back.
Text tokens are never merged. Rotary positions stay exact: the family's rotary tables (named by the
attention layout) are gathered with the kept tokens, so a merged token keeps its destination's position,
and a mask over the keys is gathered alike. One match serves the whole batch (the rotary tables are shared
by the samples in every family) and is reused for `interval` steps per module and CFG branch.

`token_merge_hooks(...)` builds the hooks of one denoiser for the caller to register (the `tome`
accelerator, genaccel/accelerators/tome.py, does, through its hook ledger).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook

from genaccel.attention.layouts import AttentionLayout, layout_of, tokens_in
from genaccel.attention.seam import GridHook, SeamState

from .matching import TokenMatch, cell_of, cell_partition, match, merge, unmerge
from .weights import ReductionSchedule, largest_share

GRID_HOOK = "genaccel_tome_grid"
MERGE_HOOK = "genaccel_tome"


@dataclass(frozen=True)
class MergeSchedule:
    """When and how much to merge: `ratio` of the video tokens, not in the first `dense_steps` steps nor in
    calls with fewer than `min_tokens` video tokens (there matching costs more than merging saves)."""

    ratio: float = 0.3
    cell: tuple[int, int, int] = (2, 2, 2)
    interval: int = 4
    dense_steps: int = 3
    min_tokens: int = 0
    local: bool = True  # a source may merge only into its own cell's destination
    plan: ReductionSchedule | None = None  # per layer and step weights of `ratio` (None: uniform)

    def ratio_at(self, layer: int, step: int | None, num_steps: int) -> float:
        if self.plan is None:
            return self.ratio
        return self.plan.ratio(self.ratio, largest_share(self.cell), layer, step, num_steps)


class MergeStats:
    """Video tokens before and after merging per site ("attention" / "ffn"), layer and step; match reuse."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.tokens = defaultdict(lambda: [0, 0])  # (site, layer, step) -> [before, after]
        self.matched = 0
        self.reused = 0

    def count(self, site: str, layer: int, step, before: int, after: int) -> None:
        record = self.tokens[(site, layer, step)]
        record[0] += before
        record[1] += after

    def summary(self) -> dict:
        """kept: share of video tokens kept per site over all calls; matched / reused: calls that computed /
        reused a match; tokens: "site/layer/step" -> (before, after)."""
        kept = {}
        for site in sorted({key[0] for key in self.tokens}):
            before = sum(v[0] for k, v in self.tokens.items() if k[0] == site)
            after = sum(v[1] for k, v in self.tokens.items() if k[0] == site)
            kept[site] = round(after / before, 4) if before else None
        order = lambda item: (item[0][0], item[0][1], -1 if item[0][2] is None else item[0][2])  # noqa: E731
        return {
            "kept": kept,
            "matched": self.matched,
            "reused": self.reused,
            "tokens": {
                f"{s}/{layer}/{step}": tuple(v) for (s, layer, step), v in sorted(self.tokens.items(), key=order)
            },
        }


def positional_names(signature: inspect.Signature) -> tuple[str, ...]:
    """Names of a bound method's parameters that can come positionally, in order."""
    return tuple(
        p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


class CallArguments:
    """Read and replace named arguments of one call, whether they came positionally or by keyword;
    `positional` is the callee's `positional_names` (computed once per module, not per call)."""

    def __init__(self, positional: tuple[str, ...], args, kwargs):
        self.positional, self.args, self.kwargs = positional, list(args), dict(kwargs)

    def _index(self, name) -> int | None:
        index = self.positional.index(name) if name in self.positional else None
        return index if index is not None and index < len(self.args) else None

    def get(self, name):
        index = self._index(name)
        return self.args[index] if index is not None else self.kwargs.get(name)

    def set(self, name, value) -> None:
        index = self._index(name)
        if index is not None:
            self.args[index] = value
        else:
            self.kwargs[name] = value


class TokenMergeHook(ModelHook):
    """On a block's self-attention (`site="attention"`) or feed-forward (`site="ffn"`): merge the video
    tokens of `hidden_states` before the module, restore them after."""

    _is_stateful = True

    def __init__(
        self,
        state: SeamState,
        schedule: MergeSchedule,
        stats: MergeStats,
        site: str,
        layer: int,
        name: str,
        seed: int = 0,
    ):
        super().__init__()
        self.state, self.schedule, self.stats = state, schedule, stats
        self.site, self.layer, self.name, self.seed = site, layer, name, seed
        self._positional: tuple[str, ...] = ()
        self._matches: dict = {}  # CFG branch -> (step matched, TokenMatch)
        self._active = None  # (video range, match) of the call in flight

    def initialize_hook(self, module):
        self._positional = positional_names(inspect.signature(module.forward))
        return module

    def reset_state(self, module):
        self._matches.clear()
        self._active = None
        return module

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def layout(self) -> AttentionLayout:
        return self.state.layout

    def _video_range(self, length: int, n: int) -> tuple[int, int] | None:
        """Where the grid's n video tokens sit among `length` tokens (text before or after, per layout)."""
        if length < n:
            return None
        return self.layout.video_range(length, length - n)

    def _match(self, video: torch.Tensor, step: int, branch, ratio: float) -> TokenMatch:
        known = self._matches.get(branch)
        n = video.shape[1]
        r = round(ratio * n)
        if known is not None and step - known[0] < self.schedule.interval and known[1].n == n:
            self.stats.reused += 1
            return known[1].recut(r)  # a schedule may change the ratio between steps: same matching, another cut
        # one match for the batch: similarity over every sample's features at once
        metric = video.transpose(0, 1).reshape(1, n, -1)
        generator = torch.Generator().manual_seed(self.seed + self.layer)
        dst, src = cell_partition(self.state.grid, self.schedule.cell, generator)
        cells = cell_of(self.state.grid, self.schedule.cell) if self.schedule.local else None
        found = match(metric, dst, src, r, cells=cells)
        self._matches[branch] = (step, found)
        self.stats.matched += 1
        return found

    # ------------------------------------------------------------------------------------------ hook
    def pre_forward(self, module, *args, **kwargs):
        self._active = None
        schedule, grid, runtime = self.schedule, self.state.grid, self.state.runtime
        step = runtime.step_index if runtime is not None else None
        call = CallArguments(self._positional, args, kwargs)
        x = call.get("hidden_states")
        if grid is None or x is None or x.dim() != 3:
            return args, kwargs
        n = tokens_in(grid, ("f", "h", "w"))
        video = self._video_range(x.shape[1], n)
        if video is None:
            return args, kwargs
        ratio = schedule.ratio_at(self.layer, step, runtime.num_steps if runtime is not None else 0)
        if ratio <= 0 or n < max(schedule.min_tokens, 2) or (step is not None and step < schedule.dense_steps):
            self.stats.count(self.site, self.layer, step, n, n)
            return args, kwargs
        v0, v1 = video
        m = self._match(x[:, v0:v1], step or 0, runtime.branch if runtime is not None else None, ratio)
        batched = m.expand(x.shape[0])
        reduced = merge(x[:, v0:v1], batched)
        call.set("hidden_states", torch.cat([x[:, :v0], reduced, x[:, v1:]], 1))
        positions = m.positions()[0]
        if self.site == "attention":
            text = call.get("encoder_hidden_states")
            text_len = text.shape[1] if isinstance(text, torch.Tensor) and text.dim() == 3 else 0
            self._gather_rotary(call, positions, n)
            self._gather_mask(call, positions, n, text_len)
            if self.layout.key_mask:
                self._size_bias(call, batched, x.dtype, text_len)
        self._active = (video, batched)
        self.stats.count(self.site, self.layer, step, n, reduced.shape[1])
        return tuple(call.args), call.kwargs

    def _gather_rotary(self, call: CallArguments, positions: torch.Tensor, n: int) -> None:
        name, dim = self.layout.rotary_arg, self.layout.rotary_token_dim
        tables = call.get(name) if name else None
        if tables is None:
            return
        gather = lambda t: t.index_select(dim, positions.to(t.device)) if t.shape[dim] == n else t  # noqa: E731
        call.set(name, tuple(gather(t) for t in tables) if isinstance(tables, (tuple, list)) else gather(tables))

    def _gather_mask(self, call: CallArguments, positions: torch.Tensor, n: int, text_len: int) -> None:
        """A mask over [video, text] keys (HunyuanVideo) keeps the kept video keys' columns."""
        mask = call.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.shape[-1] != n + text_len:
            return  # no mask, or one over the text alone (Mochi)
        v0, v1 = self.layout.video_range(n + text_len, text_len)
        keep = torch.cat([torch.arange(v0), v0 + positions.cpu(), torch.arange(v1, n + text_len)]).to(mask.device)
        call.set("attention_mask", mask.index_select(mask.dim() - 1, keep))

    def _size_bias(self, call: CallArguments, m: TokenMatch, dtype, text_len: int) -> None:
        """Proportional attention: each merged key weighs as the tokens it stands for (+log size), added to
        the family's (B, 1, 1, S) key mask (boolean masks become 0 / -inf)."""
        sizes = m.sizes()
        batch, kept = sizes.shape
        v0, v1 = self.layout.video_range(kept + text_len, text_len)
        bias = torch.zeros(batch, kept + text_len, device=sizes.device)
        bias[:, v0:v1] = sizes.log()
        bias = bias[:, None, None, :]
        mask = call.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            if mask.dim() != 4 or mask.shape[-1] != kept + text_len:
                return  # not a key mask over this sequence: leave the family's mask alone
            bias = bias.to(mask.device)
            mask = bias.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else mask.float() + bias
        else:
            mask = bias
        call.set("attention_mask", mask.to(dtype))

    def post_forward(self, module, output):
        if self._active is None:
            return output
        (v0, _), m = self._active
        self._active = None
        first = output[0] if isinstance(output, tuple) else output
        n_reduced = m.n - m.r
        restored = torch.cat([first[:, :v0], unmerge(first[:, v0 : v0 + n_reduced], m), first[:, v0 + n_reduced :]], 1)
        return (restored, *output[1:]) if isinstance(output, tuple) else restored


def token_merge_hooks(
    denoiser: torch.nn.Module, family, schedule: MergeSchedule, stats: MergeStats, runtime=None, ffn: bool = False
) -> list:
    """The hooks of one denoiser, to register by the caller: [(denoiser, GRID_HOOK, GridHook), then
    (module, MERGE_HOOK, TokenMergeHook) for each self-attention module, and each feed-forward if `ffn`]."""
    layout = layout_of(family)
    state = SeamState(layout=layout, runtime=runtime)
    hooks = [(denoiser, GRID_HOOK, GridHook(state, family.tensor_format))]
    for index, (name, module) in enumerate(family.attention_layers(denoiser, "self")):
        hooks.append((module, MERGE_HOOK, TokenMergeHook(state, schedule, stats, "attention", index, name)))
        block = denoiser.get_submodule(name.rsplit(".", 1)[0])
        feed_forward = getattr(block, layout.ffn, None) if ffn and layout.ffn else None
        if isinstance(feed_forward, torch.nn.Module):
            hooks.append(
                (
                    feed_forward,
                    MERGE_HOOK,
                    TokenMergeHook(state, schedule, stats, "ffn", index, f"{name.rsplit('.', 1)[0]}.{layout.ffn}"),
                )
            )
    return hooks
