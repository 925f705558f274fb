"""Calibrated token reduction schedules (genaccel/tokens/weights.py): weights follow the measured token
similarity with a mean of 1, steps map by their relative position, a match is recut rather than recomputed
when the ratio changes, `genaccel calibrate` writes the table, and `schedule=profile` moves the merging to
the layers whose tokens are most alike."""

import numpy as np
import pytest
import torch

from genaccel import apply, remove
from genaccel.errors import SpecError
from genaccel.generation.generate import generate
from genaccel.tokens import cell_partition, match
from genaccel.tokens.matching import cell_similarity
from genaccel.tokens.weights import ReductionSchedule
from genaccel.tools.calibrate import calibrate


def test_weights_follow_similarity_with_mean_one():
    schedule = ReductionSchedule([[0.5, 0.9], [0.9, 0.99]])
    w = schedule.weights
    assert w.mean().item() == pytest.approx(1.0)
    assert w[1, 1] > w[1, 0] == w[0, 1] > w[0, 0]  # more alike, more merging
    assert w[1, 1] / w[0, 0] == pytest.approx((1 - 0.5) / (1 - 0.99))
    assert schedule.ratio(0.3, 0.875, 1, 1, 2) == 0.875  # capped at what the cells allow


def test_steps_map_by_relative_position_and_layers_clamp():
    schedule = ReductionSchedule([[0.1, 0.2, 0.3, 0.4, 0.5]])  # calibrated over 5 steps
    assert schedule.weight(0, 9, 10) == schedule.weight(0, 4, 5)  # last step of a 10-step run = last column
    assert schedule.weight(0, 0, 10) == schedule.weight(0, 0, 5)
    assert schedule.weight(7, 2, 5) == schedule.weight(0, 2, 5)  # layers past the table take its last row
    with pytest.raises(ValueError, match="genaccel calibrate"):
        ReductionSchedule.from_profile({})


def test_recut_equals_a_fresh_match_at_another_ratio():
    grid, cell = (2, 4, 4), (1, 2, 2)
    dst, src = cell_partition(grid, cell, torch.Generator().manual_seed(0))
    x = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(1))
    m = match(x, dst, src, 6)
    fresh = match(x, dst, src, 12)
    recut = m.recut(12)
    for name in ("merged", "into", "kept"):
        assert torch.equal(getattr(recut, name), getattr(fresh, name))
    assert m.recut(6) is m


def test_cell_similarity_is_one_for_cell_copies():
    grid, cell = (2, 4, 4), (2, 2, 2)
    base = torch.randn(1, 1, 2, 2, 8)  # one feature per cell
    x = base.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3).reshape(1, 32, 8)
    assert cell_similarity(x, grid, cell) == pytest.approx(1.0)
    assert cell_similarity(torch.randn(1, 32, 8), grid, cell) < 0.5


def test_calibrate_writes_the_table_and_profile_schedule_moves_merging(tiny):
    pipe = tiny("wan")
    profile = calibrate(pipe, ["a red circle moving left"])
    table = profile["tokens"]["similarity"]
    layers = len(pipe.transformer.blocks)
    assert len(table) == layers and len(table[0]) == profile["num_inference_steps"]
    assert all(-1.0 <= v <= 1.0 for row in table for v in row)

    # a table that makes layer 0 far more redundant than the others: it gets the merging
    steps = profile["num_inference_steps"]
    skewed = {"tokens": {"cell": [2, 2, 2], "similarity": [[0.99] * steps] + [[0.5] * steps] * (layers - 1)}}
    spec = "tome(ratio=0.2,cell=1:1:2,dense_steps=0,min_tokens=0,schedule=profile)"
    apply(pipe, spec, profile=skewed)
    result = generate(pipe, "a red circle moving left", seed=0)
    tokens = result.stats["accelerators"]["tome"]["tokens"]
    kept = {layer: [] for layer in range(layers)}
    for key, (before, after) in tokens.items():
        kept[int(key.split("/")[1])].append(after / before)
    assert np.mean(kept[0]) < min(np.mean(kept[layer]) for layer in range(1, layers))
    remove(pipe)
    with pytest.raises(SpecError, match="genaccel calibrate"):
        apply(pipe, spec, profile={})
