"""The tiny random-weight pipelines: shapes, determinism, CFG, Wan 2.2 experts, and the word tokenizer."""

import numpy as np
import pytest
import torch

from genaccel.pipelines.tiny import (
    TINY_CALL_DEFAULTS,
    TINY_FAMILIES,
    build_tiny_pipeline,
    frames_to_array,
    tiny_call_kwargs,
)
from genaccel.pipelines.tokenizer import build_word_tokenizer


def _build(name: str, seed: int = 0):
    pipe = build_tiny_pipeline(name, seed=seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_generation_shape_finite_and_deterministic(name):
    d = TINY_CALL_DEFAULTS[name]
    assert d["num_inference_steps"] == 8 and d["guidance_scale"] > 1
    pipe = _build(name)

    out = pipe(**tiny_call_kwargs(name))
    frames = out.frames  # output_type="np": (batch, F, H, W, 3) for every family
    assert isinstance(frames, np.ndarray)
    assert frames.shape == (1, d["num_frames"], d["height"], d["width"], 3)
    video = frames_to_array(out)
    assert video.shape == frames.shape[1:] and video.dtype == np.float32
    assert np.isfinite(video).all() and video.min() >= 0.0 and video.max() <= 1.0

    again = frames_to_array(pipe(**tiny_call_kwargs(name)))
    rebuilt = frames_to_array(_build(name)(**tiny_call_kwargs(name)))
    np.testing.assert_array_equal(video, again)
    np.testing.assert_array_equal(video, rebuilt)


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_block_lists_have_a_middle(name):
    transformer = build_tiny_pipeline(name).transformer
    lists = {k: len(v) for k, v in transformer.named_children() if isinstance(v, torch.nn.ModuleList)}
    assert lists and all(n >= 3 for n in lists.values()), lists


def test_wan22_uses_both_experts_in_one_generation():
    pipe = _build("wan22")
    assert pipe.config.boundary_ratio is not None
    calls = {"transformer": 0, "transformer_2": 0}
    for key in calls:
        getattr(pipe, key).register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    pipe(**tiny_call_kwargs("wan22"))
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0, calls
    # Wan runs the conditional and unconditional passes as two forwards: 2 per step in all.
    assert sum(calls.values()) == 2 * TINY_CALL_DEFAULTS["wan22"]["num_inference_steps"]


def test_frames_to_array_pt_matches_np():
    pipe = _build("latte")
    np_video = frames_to_array(pipe(**tiny_call_kwargs("latte")))
    pt_out = pipe(**tiny_call_kwargs("latte", output_type="pt"))
    assert tuple(pt_out.frames.shape[2:]) == (3, 32, 32)  # "pt" layout: (batch, F, 3, H, W)
    np.testing.assert_allclose(frames_to_array(pt_out), np_video, atol=1e-6)


@pytest.mark.parametrize("style", ["t5", "llama", "clip"])
def test_word_tokenizer_maps_unknown_to_unk_and_appends_eos(style):
    tok = build_word_tokenizer(style=style)
    ids = tok("A RED circle, moving zzzblorp").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    words = ["a", "red", "circle", ",", "moving", tok.unk_token]
    if style == "t5":
        assert tokens == [*words, tok.eos_token]
        assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    else:
        assert tokens == [tok.bos_token, *words, tok.eos_token]
    padded = tok("red", padding="max_length", max_length=6)
    assert padded.input_ids[-1] == tok.pad_token_id and padded.attention_mask[-1] == 0
    if style == "clip":
        assert tok.pad_token_id == tok.eos_token_id != tok.unk_token_id
