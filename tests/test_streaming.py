"""Streamed generation: the rolling KV cache, chunk-wise decoding, the stream loop, its CLI and Python API.

The tiny random Wan pipeline stands in for a causal model (a [stream] table set in code) except where the
shipped causal model itself is under test.
"""

import json

import numpy as np
import pytest
import torch

from genaccel import apply, remove
from genaccel.cli import main
from genaccel.errors import InputError, ModelError, SpecError
from genaccel.generation.stream import parse_prompt_switches, stream
from genaccel.streaming.decode import StreamingDecoder
from genaccel.streaming.kv_cache import FrameRotation, RollingKVCache, kept_frames

PROMPT = "a red circle moving left on a black background"
OTHER = "a blue square moving up on a gray background"


@pytest.fixture
def causal_wan(tiny):
    """The tiny Wan pipeline declared a block-causal model of one-frame chunks."""
    pipe = tiny("wan")
    pipe._genaccel_stream = {"attention": "block_causal", "chunk_frames": 1, "window": 2, "sink": 1}
    yield pipe
    remove(pipe)


def _commit_frames(pipe, accel, frames, embeds):
    cache = accel.accelerators[0].caches[0]
    for x in frames:
        with cache.commit_pass(), pipe.transformer.cache_context("cond"):
            pipe.transformer(x, torch.zeros(1), embeds, return_dict=False)
    return cache


def test_chunk_over_cache_equals_block_causal_whole_clip(causal_wan):
    """A chunk attending the cache of committed frames gives what a block-causal forward over the whole clip
    (earlier frames clean at timestep 0, the chunk at its own timestep) gives for that chunk."""
    pipe, transformer = causal_wan, causal_wan.transformer
    g = torch.Generator().manual_seed(0)
    shape = (1, transformer.config.in_channels, 1, 4, 4)
    frames = [torch.randn(shape, generator=g) for _ in range(4)]
    chunk = torch.randn(shape, generator=g)
    embeds = torch.randn(1, 8, transformer.config.text_dim, generator=g)
    accel = apply(pipe, "kvcache(window=8,sink=1)")
    with accel.generation(), torch.no_grad():
        cache = _commit_frames(pipe, accel, frames, embeds)
        with transformer.cache_context("cond"):
            streamed = transformer(chunk, torch.full((1,), 500.0), embeds, return_dict=False)[0]
    assert cache.frames("cond") == [0, 1, 2, 3]
    apply(pipe, "none")  # the block-causal attention alone
    timesteps = torch.tensor([0.0] * 4 + [500.0]).repeat_interleave(4).unsqueeze(0)  # 2x2 tokens per frame
    with torch.no_grad():
        whole = transformer(torch.cat([*frames, chunk], dim=2), timesteps, embeds, return_dict=False)[0]
    torch.testing.assert_close(streamed, whole[:, :, -1:], atol=1e-5, rtol=1e-4)


def test_frame_rotation_moves_rotary_positions(tiny):
    """Keys rotated at frame p and then by d frames equal keys rotated at frame p + d (d may be negative)."""
    from genaccel.attention.processor import _wan_rotary

    rope = tiny("wan").transformer.rope
    keys = torch.randn(1, 3, 2, rope.attention_head_dim)
    grid = torch.zeros(1, 1, 6, 2, 2)  # 6 frames of one (2x2-patch) token
    cos, sin = rope(grid)
    at = (  # noqa: E731
        lambda p: _wan_rotary(
            keys.transpose(1, 2),
            cos[:, p : p + 1].expand(1, 2, 1, -1),
            sin[:, p : p + 1].expand(1, 2, 1, -1),
        ).transpose(1, 2)
    )
    rotate = FrameRotation(rope)
    torch.testing.assert_close(rotate(at(1), torch.tensor([3, 3])), at(4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotate(at(5), torch.tensor([-4, -4])), at(1), atol=1e-5, rtol=1e-5)


def test_rolling_cache_keeps_sink_and_window_at_flat_size():
    assert kept_frames(3, 1, 2) == [0, 1, 2]
    assert kept_frames(7, 1, 2) == [0, 5, 6]
    assert kept_frames(7, 0, 3) == [4, 5, 6]
    cache = RollingKVCache(window=2, sink=1)
    sizes = []
    for i in range(8):
        k = torch.full((1, 2, 4, 8), float(i))
        with cache.commit_pass():
            cache.commit(("cond", 0), k, k + 100, tokens_per_frame=4)
        sizes.append(cache.nbytes())
    assert cache.frames() == [0, 6, 7]
    entry = cache.entries[("cond", 0)]
    assert entry.keys[0, 0, :, 0].tolist() == [0.0] * 4 + [6.0] * 4 + [7.0] * 4  # the frames' own keys
    assert entry.values[0, 0, :, 0].tolist() == [100.0] * 4 + [106.0] * 4 + [107.0] * 4
    assert sizes[2:] == [sizes[2]] * 6
    with pytest.raises(ValueError, match="window"):
        RollingKVCache(window=0, sink=1)


def test_streaming_decoder_equals_whole_clip_decode(tiny):
    vae = tiny("wan").vae
    latents = torch.randn(1, vae.config.z_dim, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    decoder = StreamingDecoder(vae)
    parts = [decoder(latents[:, :, :1]), decoder(latents[:, :, 1:3]), decoder(latents[:, :, 3:])]
    assert [len(p) for p in parts] == [1, 8, 4]
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        whole = vae.decode(latents * std + mean, return_dict=False)[0]
    whole = (whole[0].permute(1, 2, 3, 0) / 2 + 0.5).numpy()
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_stream_yields_chunks_with_flat_state_and_switches_prompt(causal_wan):
    chunks = list(stream(causal_wan, PROMPT, chunks=6, prompts_at={3: OTHER}, steps=2, seed=3))
    assert [len(c.frames) for c in chunks] == [1, 4, 4, 4, 4, 4]
    assert [c.first_frame for c in chunks] == [0, 1, 5, 9, 13, 17]
    assert [c.prompt for c in chunks] == [PROMPT] * 3 + [OTHER] * 3
    assert [c.recached for c in chunks] == [False, False, False, True, False, False]
    assert chunks[-1].cached_frames == [0, 4, 5]
    assert chunks[2].memory_bytes == chunks[5].memory_bytes  # window full from chunk 2 on
    again = list(stream(causal_wan, PROMPT, chunks=2, steps=2, seed=3))
    np.testing.assert_array_equal(again[1].frames, chunks[1].frames)  # a seed gives one stream
    other = list(stream(causal_wan, PROMPT, chunks=2, steps=2, seed=4))
    assert not np.array_equal(other[1].frames, chunks[1].frames)
    projections = causal_wan._genaccel.accelerators[0]
    assert projections.caches  # the stream ran behind the kvcache accelerator


def test_prompt_projections_are_reused_within_a_prompt(causal_wan):
    from diffusers.hooks import HookRegistry

    from genaccel.streaming.prompt_kv import PROMPT_KV_HOOK

    list(stream(causal_wan, PROMPT, chunks=2, steps=2))
    to_k = causal_wan.transformer.blocks[0].attn2.to_k
    hook = HookRegistry.check_if_exists_or_initialize(to_k).get_hook(PROMPT_KV_HOOK)
    # 2 chunks x (2 steps x 2 branches + 2 commit passes) calls, 2 prompt tensors: 2 computed
    assert hook.hits == 10


def test_stream_is_ended_early_by_close(causal_wan):
    s = stream(causal_wan, PROMPT, steps=1)  # unbounded
    first = [next(s) for _ in range(3)]
    s.close()
    assert [c.index for c in first] == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(s)


def test_stream_switch_prompt_from_outside(causal_wan):
    s = stream(causal_wan, PROMPT, chunks=3, steps=1)
    next(s)
    assert torch.is_grad_enabled()  # a paused stream leaves the caller's grad mode alone (training after it works)
    s.switch_prompt(OTHER)
    second = next(s)
    assert second.prompt == OTHER and second.recached
    with pytest.raises(InputError, match="empty"):
        s.switch_prompt("  ")


def test_stream_refuses_bad_input(tiny, causal_wan):
    with pytest.raises(ModelError, match="not a causal streaming model"):
        stream(tiny("cogvideox"), PROMPT, chunks=1)
    with pytest.raises(SpecError, match="window must be between 1 and 256"):
        stream(causal_wan, PROMPT, chunks=1, window=0)
    with pytest.raises(SpecError, match="without that chunk's keys and values"):
        stream(causal_wan, PROMPT, chunks=1, accel="fbcache")  # a pass skipper that would skip commit passes
    with pytest.raises(InputError, match="either in --accel"):
        stream(causal_wan, PROMPT, chunks=1, accel="kvcache(window=3)", window=2)
    with pytest.raises(InputError, match="at least 1"):
        stream(causal_wan, PROMPT, chunks=0)


def test_teacache_stacks_with_the_cache_and_never_skips_a_commit_pass(causal_wan):
    chunks = list(stream(causal_wan, PROMPT, chunks=5, steps=6, accel="teacache(threshold=1e9,coefficients=identity)"))
    accel = causal_wan._genaccel
    assert accel.spec == "teacache(threshold=1000000000.0,coefficients=identity)+kvcache(window=2,sink=1)"
    # every step but each chunk's first and last skipped, on both CFG branches
    assert accel.stats()["accelerators"]["teacache"]["passes_skipped"] == 5 * 2 * (6 - 2)
    cache = accel.accelerators[1].caches[0]
    assert {entry.committed for entry in cache.entries.values()} == {5}  # every layer saw every commit pass
    assert len(cache.entries) == 2 * len(causal_wan.transformer.blocks)
    assert chunks[-1].cached_frames == [0, 3, 4] and all(np.isfinite(c.frames).all() for c in chunks)


def test_prompt_switch_parsing():
    assert parse_prompt_switches(["2:" + OTHER, "5: " + PROMPT]) == {2: OTHER, 5: PROMPT}
    for bad, message in (
        ("x:" + OTHER, "CHUNK:TEXT"),
        ("3", "CHUNK:TEXT"),
        ("0:" + OTHER, "start at chunk 1"),
        ("2:  ", "empty"),
        ("9:" + OTHER, "only 4 chunks"),
    ):
        with pytest.raises(InputError, match=message):
            parse_prompt_switches([bad], chunks=4)
    with pytest.raises(InputError, match="given twice"):
        parse_prompt_switches(["2:a", "2:b"])


# ----------------------------------------------------------------------------- the shipped causal model + CLI
def test_cli_stream_writes_a_playable_video_and_json_per_chunk(tmp_path, capsys):
    from genaccel.io.video import read_video

    out = tmp_path / "s.mp4"
    code = main(
        ["stream", PROMPT, "--chunks", "3", "--steps", "2", "--prompt-at", f"2:{OTHER}", "--json", "--out", str(out)]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["chunk"] for line in lines[:-1]] == [0, 1, 2]
    assert all(line["seconds"] > 0 and line["memory"] > 0 for line in lines[:-1])
    assert lines[2]["prompt"] == OTHER and lines[2]["recached"]
    summary = lines[-1]
    assert summary["summary"] and summary["chunks"] == 3 and summary["frames"] == 9
    assert summary["accel"] == "kvcache(window=4,sink=1)"
    assert read_video(out).shape == (9, 64, 64, 3)
    assert not (tmp_path / ".s.part.mp4").exists()


def test_cli_stream_seconds_sets_the_chunk_count(tmp_path, capsys):
    out = tmp_path / "s.mp4"
    assert (
        main(
            [
                "stream",
                PROMPT,
                "--seconds",
                "1",
                "--fps",
                "8",
                "--steps",
                "1",
                "--window",
                "2",
                "--json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["frames"] >= 8 and summary["chunks"] == 3 and summary["accel"] == "kvcache(window=2,sink=1)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "x.gif"], "is written as .mp4"),
        (["--prompt-at", "nope"], "CHUNK:TEXT"),
        (["--chunks", "2", "--prompt-at", f"5:{OTHER}"], "only 2 chunks"),
        (["--seconds", "-1"], "positive number"),
        (["--window", "0"], "window must be between 1 and 256"),
        (["--model", "tiny-wan"], "not a causal streaming model"),
    ],
)
def test_cli_stream_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "s.mp4"
    length = [] if {"--chunks", "--seconds"} & set(args) else ["--chunks", "2"]
    code = main(["stream", PROMPT, *length, "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_stream_writer_writes_under_a_part_name_until_closed(tmp_path):
    """(That the part file plays mid-run depends on ffmpeg's own timing, so it is checked by hand, not here.)"""
    from genaccel.io.video import StreamWriter, read_video

    out = tmp_path / "live.mp4"
    writer = StreamWriter(out, fps=8)
    frames = np.random.default_rng(0).random((4, 32, 32, 3))
    writer.write(frames[:1])
    for _ in range(3):
        writer.write(frames)
    part = tmp_path / ".live.part.mp4"
    assert not out.exists()
    assert writer.close() == out and read_video(out).shape == (13, 32, 32, 3) and not part.exists()
    with pytest.raises(InputError, match="is written as .mp4"):
        StreamWriter(tmp_path / "x.gif")
