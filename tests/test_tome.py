"""Token merging around a module (genaccel/tokens/tome.py): kept tokens keep their own positions (the
rotary tables are gathered with them), merged tokens get their destination's output, text tokens are never
merged, a mask over [video, text] keys is gathered alike, and ratio 0 is the identity."""

import pytest
import torch
from diffusers.hooks import HookRegistry

from genaccel.accelerators.runtime import Runtime
from genaccel.attention.layouts import LAYOUTS
from genaccel.attention.seam import SeamState
from genaccel.tokens.tome import MERGE_HOOK, MergeSchedule, MergeStats, TokenMergeHook

GRID = (2, 2, 4)  # 16 video tokens
N = 16


class PositionEcho(torch.nn.Module):
    """Stands in for a self-attention module: each token's output is its input plus its rotary position
    (Wan's (1, S, 1, D) tables), and the module records what it was given."""

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        self.seen = (hidden_states, attention_mask, rotary_emb)
        cos, _ = rotary_emb
        return hidden_states + cos[:, :, 0, :1]


def _hooked(module, layout="wan", ratio=0.5, site="attention", step=5, interval=4):
    runtime = Runtime()
    runtime.step_index = step
    state = SeamState(layout=LAYOUTS[layout], runtime=runtime, grid=GRID)
    stats = MergeStats()
    hook = TokenMergeHook(
        state,
        MergeSchedule(ratio=ratio, cell=(1, 2, 2), interval=interval, dense_steps=0),
        stats,
        site,
        layer=0,
        name="blocks.0.attn1",
    )
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, MERGE_HOOK)
    return hook, stats, runtime


def _rotary():
    position = torch.arange(N, dtype=torch.float32)
    cos = position[None, :, None, None].expand(1, N, 1, 4).clone()
    return cos, torch.zeros_like(cos)


def test_kept_tokens_keep_their_positions_and_merged_tokens_take_their_destinations():
    module = PositionEcho()
    hook, stats, _ = _hooked(module)
    x = torch.randn(2, N, 4)
    out = module(x, None, None, _rotary())  # positionally, as Wan's blocks call attn1
    merged_x, _, (cos, _) = module.seen
    assert merged_x.shape[1] == N - N // 2 and cos.shape[1] == merged_x.shape[1]  # tables gathered with the tokens
    m = next(iter(hook._matches.values()))[1]
    positions = m.positions()[0]
    # every token of the reduced sequence carries its own original position
    assert torch.equal(cos[0, :, 0, 0], positions.float())
    kept_sources = m.src[m.kept[0]]
    assert torch.allclose(out[:, kept_sources], x[:, kept_sources] + kept_sources.float()[None, :, None])
    # a merged source's output is its destination's output
    merged_sources, destinations = m.src[m.merged[0]], m.dst[m.into[0]]
    assert torch.equal(out[:, merged_sources], out[:, destinations])
    assert stats.summary()["kept"] == {"attention": 0.5}


def test_ratio_zero_is_the_identity_and_identical_tokens_restore_exactly():
    module = PositionEcho()
    _hooked(module, ratio=0.0)
    x = torch.randn(1, N, 4)
    assert torch.equal(module(x, None, None, _rotary()), x + torch.arange(N).float()[None, :, None])

    class Identity(torch.nn.Module):
        def forward(self, hidden_states):
            return hidden_states * 2

    ffn = Identity()
    _hooked(ffn, site="ffn", ratio=0.5)
    same = torch.ones(1, N, 4) * 3  # every token equal: merging loses nothing
    assert torch.equal(ffn(same), same * 2)


def test_text_tokens_are_never_merged_and_a_joint_mask_is_gathered():
    class JointEcho(torch.nn.Module):  # HunyuanVideo-like: video hidden states, text apart, mask over [video, text]
        def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            self.seen = (hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
            return hidden_states + 1, encoder_hidden_states

    module = JointEcho()
    hook, _, _ = _hooked(module, layout="hunyuanvideo")
    x, text = torch.randn(1, N, 4), torch.randn(1, 5, 4)
    mask = torch.ones(1, 1, 1, N + 5, dtype=torch.bool)
    mask[..., -2:] = False  # two padded text tokens
    rotary = (torch.arange(N).float()[:, None].expand(N, 4), torch.zeros(N, 4))  # (S, D) tables
    out, text_out = module(x, text, mask, rotary)
    hidden, seen_text, seen_mask, (cos, _) = module.seen
    assert torch.equal(seen_text, text) and torch.equal(text_out, text)
    kept = hidden.shape[1]
    m = next(iter(hook._matches.values()))[1]
    # the boolean key mask, gathered, becomes proportional attention: log(size) on the video keys, 0 on the
    # valid text keys, -inf on the padded ones
    assert seen_mask.shape == (1, 1, 1, kept + 5) and seen_mask.dtype == x.dtype
    assert torch.allclose(seen_mask[0, 0, 0, :kept], m.sizes()[0].log())
    assert seen_mask[..., kept : kept + 3].eq(0).all() and seen_mask[..., -2:].eq(float("-inf")).all()
    assert seen_mask[..., :kept].max() > 0  # some keys stand for several tokens
    assert torch.equal(cos[:, 0], m.positions()[0].float())
    assert out.shape == x.shape


def test_feed_forward_with_text_first_merges_only_the_video_part():
    class Double(torch.nn.Module):
        def forward(self, hidden_states):
            self.seen = hidden_states
            return hidden_states * 2

    ffn = Double()
    _hooked(ffn, layout="cogvideox", site="ffn")
    text, video = torch.randn(1, 3, 4), torch.randn(1, N, 4)
    out = ffn(torch.cat([text, video], 1))  # CogVideoX's feed-forward sees cat([text, video])
    assert torch.equal(ffn.seen[:, :3], text) and ffn.seen.shape[1] == 3 + N // 2
    assert torch.equal(out[:, :3], text * 2) and out.shape == (1, 3 + N, 4)


def test_matches_are_reused_for_interval_steps_per_branch():
    module = PositionEcho()
    hook, stats, runtime = _hooked(module, interval=2)
    x = torch.randn(1, N, 4)
    for step in (5, 6, 7):
        runtime.step_index = step
        module(x, None, None, _rotary())
    assert (stats.matched, stats.reused) == (2, 1)  # 5 matches, 6 reuses, 7 matches again
    runtime.branch = "uncond"
    module(x, None, None, _rotary())
    assert stats.matched == 3  # each CFG branch has its own match
    hook.reset_state(module)
    assert hook._matches == {}


@pytest.mark.parametrize("grid", [(2, 2, 3), None])
def test_calls_that_do_not_hold_the_grid_run_unchanged(grid):
    module = PositionEcho()
    hook, stats, _ = _hooked(module)
    hook.state.grid = grid  # 12 tokens expected (or no grid known) but the call holds 16: not ours to merge
    x = torch.randn(1, N, 4)
    if grid is not None:
        x = torch.randn(1, 10, 4)
        rotary = (torch.zeros(1, 10, 1, 4), torch.zeros(1, 10, 1, 4))
    else:
        rotary = _rotary()
    out = module(x, None, None, rotary)
    assert module.seen[0] is x and out.shape == x.shape and stats.matched == 0
