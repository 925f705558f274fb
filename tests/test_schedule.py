"""Computed-step schedules (LeMiCa): the minimax path solver, the `schedule` accelerator, and its calibration."""

import itertools
import random

import numpy as np
import pytest

from genaccel import apply, remove
from genaccel.accelerators.schedule import all_budgets, minimax_path, path_errors, skip_spans
from genaccel.errors import SpecError
from genaccel.generation.generate import generate
from genaccel.generation.prepare import prepare
from genaccel.generation.request import GenerationRequest
from genaccel.models.profiles import dump_profile
from genaccel.tools.calibrate_schedule import calibrate_schedule, merge_schedule

PROMPT = "a red circle moving left on a black background"


# ------------------------------------------------------------------ the solver
def _brute_force(steps, budget, errors):
    """Every path from 0 to steps-1 through `budget` nodes over the measured edges (and consecutive steps)."""
    best = None
    for middle in itertools.combinations(range(1, steps - 1), budget - 2):
        path = [0, *middle, steps - 1]
        spans = list(zip(path, path[1:]))
        if any(j > i + 1 and (i, j) not in errors for i, j in spans):
            continue
        key = tuple(sorted((errors.get(s, 0.0) if s[1] > s[0] + 1 else 0.0 for s in spans), reverse=True))
        if best is None or key < best[0]:
            best = (key, path)
    return best


def test_hand_made_graph_has_the_known_minimax_path():
    # Six steps, three computed: 0 -> k -> 5. Largest errors: via 1: 3, via 2: 4, via 3: 5, via 4: 2.
    errors = {(0, 2): 1.0, (0, 3): 5.0, (0, 4): 2.0, (1, 5): 3.0, (2, 5): 4.0, (3, 5): 1.0}
    assert minimax_path(6, 3, errors) == [0, 4, 5]
    assert path_errors([0, 4, 5], errors) == [2.0, 0.0]


def test_ties_on_the_largest_error_go_to_the_smaller_second():
    # Two 4-node paths have the smallest largest error, 5; next comes 1 on 0-2-3-5 and 4 on 0-1-3-5.
    errors = {(0, 2): 1.0, (3, 5): 5.0, (1, 3): 4.0, (2, 5): 9.0, (0, 3): 9.0, (1, 5): 9.0}
    path = minimax_path(6, 4, errors)
    assert path == [0, 2, 3, 5]
    assert path_errors(path, errors) == [5.0, 1.0, 0.0]


@pytest.mark.parametrize("seed", range(12))
def test_solver_matches_brute_force_on_random_graphs(seed):
    rng = random.Random(seed)
    steps = rng.randint(4, 10)
    max_span = rng.randint(2, 5)
    errors = {span: rng.choice([rng.random(), float(rng.randint(0, 3))]) for span in skip_spans(steps, max_span)}
    for budget, path in all_budgets(steps, errors).items():
        expected = _brute_force(steps, budget, errors)
        assert expected is not None
        assert path_errors(path, errors) == list(expected[0]), (budget, path, expected)
        assert len(path) == budget and path[0] == 0 and path[-1] == steps - 1 and path == sorted(set(path))


def test_infeasible_budget_is_refused_in_one_line():
    errors = {span: 1.0 for span in skip_spans(10, 3)}  # one computed step covers at most 3 steps
    with pytest.raises(ValueError, match="no schedule of 3 computed steps over 10 steps") as info:
        minimax_path(10, 3, errors)
    assert "\n" not in str(info.value)
    assert min(all_budgets(10, errors)) == 4  # 0 -> 3 -> 6 -> 9
    with pytest.raises(ValueError, match="budget 11"):
        minimax_path(10, 11, errors)


def test_spans_to_measure():
    assert skip_spans(6, 3) == [(0, 2), (0, 3), (1, 3), (1, 4), (2, 4), (2, 5), (3, 5)]


# ------------------------------------------------------------------ the accelerator
def test_explicit_steps_compute_exactly_those_steps(tiny):
    pipe = tiny("wan")
    base = generate(pipe, PROMPT, seed=0)
    every = generate(pipe, PROMPT, seed=0, accel="schedule(steps=[0;1;2;3;4;5;6;7])")
    np.testing.assert_array_equal(every.frames, base.frames)
    fast = generate(pipe, PROMPT, seed=0, accel="schedule(steps=[0;3;7])")
    figures = fast.stats["accelerators"]["schedule"]
    steps = fast.request.num_inference_steps
    assert figures["computed_steps"] == [0, 3, 7]
    # each CFG branch computes the three listed steps and skips the rest
    assert figures["passes_computed"] == 2 * 3 and figures["passes_skipped"] == 2 * (steps - 3)
    assert fast.stats["skipped_calls"] == 2 * (steps - 3)
    assert not np.array_equal(fast.frames, base.frames) and np.isfinite(fast.frames).all()
    remove(pipe)


def test_calibrated_budget_follows_the_profile(tiny, monkeypatch):
    pipe = tiny("wan")
    steps = generate(pipe, PROMPT).request.num_inference_steps
    profile = {
        "schedule": {
            "default": {f"steps{steps}": {"computed3": [0, 4, steps - 1], "computed4": [0, 2, 5, steps - 1]}},
            "long": {f"steps{steps}": {"computed4": [0, 1, 3, steps - 1]}},
        }
    }
    apply(pipe, "schedule(budget=4)", profile=profile)
    result = generate(pipe, GenerationRequest(prompt=PROMPT, accel=None))
    assert result.stats["accelerators"]["schedule"]["computed_steps"] == [0, 2, 5, steps - 1]
    # a run of another setting follows that setting's schedules (same steps, same spec: the same hooks)
    sizes = {k: getattr(result.request, k) for k in ("num_frames", "height", "width", "num_inference_steps")}
    table = getattr(pipe, "_genaccel_defaults", None) or {}
    monkeypatch.setattr(
        pipe, "_genaccel_defaults", {**table, "settings": {**table.get("settings", {}), "long": sizes}}, raising=False
    )
    result = generate(pipe, GenerationRequest(prompt=PROMPT, accel=None, setting="long"))
    assert result.stats["accelerators"]["schedule"]["computed_steps"] == [0, 1, 3, steps - 1]
    remove(pipe)


def test_each_setting_follows_its_own_schedules_else_the_defaults():
    from genaccel.accelerators.schedule import calibrated_steps

    profile = {
        "schedule": {
            "default": {"steps30": {"computed5": [0, 1, 3, 15, 29]}},
            "long": {"steps30": {"computed5": [0, 2, 6, 20, 29]}},
        }
    }
    assert calibrated_steps(profile, 30, 5) == (0, 1, 3, 15, 29)
    assert calibrated_steps(profile, 30, 5, "long") == (0, 2, 6, 20, 29)
    assert calibrated_steps(profile, 30, 5, "wide") == (0, 1, 3, 15, 29)  # none of its own: the default's
    only_long = {"schedule": {"long": profile["schedule"]["long"]}}
    with pytest.raises(ValueError, match="needs computed-step schedules"):
        calibrated_steps(only_long, 30, 5)


def test_another_step_count_stretches_the_nearest_schedule():
    from genaccel.accelerators.schedule import calibrated_steps

    profile = {
        "schedule": {
            "default": {"steps30": {"computed5": [0, 1, 3, 15, 29]}, "steps10": {"computed5": [0, 1, 2, 5, 9]}}
        }
    }
    assert calibrated_steps(profile, 30, 5) == (0, 1, 3, 15, 29)
    assert calibrated_steps(profile, 50, 5) == (0, 2, 5, 25, 49)  # from the 30-step one, same fractions
    assert calibrated_steps(profile, 12, 5) == (0, 1, 2, 6, 11)  # from the nearest: 10 steps
    assert calibrated_steps(profile, 3, 5) == (0, 1, 2)  # fewer steps than the budget: every step


def test_missing_schedule_is_a_one_line_spec_error(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("GENACCEL_PROFILE_DIR", str(tmp_path))
    pipe = tiny("wan")
    with pytest.raises(
        SpecError, match=r"schedule on .*: needs computed-step schedules .*genaccel calibrate --schedule"
    ):
        apply(pipe, "schedule(budget=3)", profile={})
    # a profile for another step count: named before any work
    from genaccel.models.profiles import pipeline_model_key

    (tmp_path / f"{pipeline_model_key(pipe)}.toml").write_text(
        dump_profile({"schedule": {"default": {"steps50": {"computed3": [0, 9, 49]}}}})
    )
    prepare(pipe, GenerationRequest(prompt=PROMPT, accel="schedule(budget=3)", num_inference_steps=8))  # stretched
    with pytest.raises(SpecError, match=r"budget 5: the calibrated 50-step schedules have budgets 3..3"):
        prepare(pipe, GenerationRequest(prompt=PROMPT, accel="schedule(budget=5)", num_inference_steps=50))


@pytest.mark.parametrize("bad", ["schedule(budget=0)", "schedule(steps=[0;x])", "schedule(steps=[-1;2])"])
def test_bad_parameters_are_refused(bad):
    from genaccel.generation.spec import check_spec

    with pytest.raises(SpecError) as info:
        check_spec(bad)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ calibration
def test_calibration_measures_every_span_and_solves_every_budget(tiny):
    pipe = tiny("wan")
    base = GenerationRequest(num_inference_steps=6)
    calls = []
    section = calibrate_schedule(pipe, [PROMPT], base=base, max_span=3, progress=lambda d, t: calls.append((d, t)))
    table = section["steps6"]
    spans = {(i, j) for i, j, _ in table["errors"]}
    assert spans == set(skip_spans(6, 3))
    assert all(e > 0 for _, _, e in table["errors"])  # reusing a residual changes the video
    assert calls[-1] == (len(spans) + 1, len(spans) + 1)
    # a longer reuse from the same step changes the video more (the same prefix, more steps reused)
    errors = {(i, j): e for i, j, e in table["errors"]}
    assert errors[(0, 3)] > errors[(0, 2)]
    budgets = sorted(int(k.removeprefix("computed")) for k in table if k.startswith("computed"))
    assert budgets == [3, 4, 5, 6]  # 0 -> 3 -> 5 at the fewest
    assert table["computed6"] == list(range(6))
    # the profile round-trips through TOML, and the accelerator runs the calibrated schedule
    import tomllib

    profile = tomllib.loads(dump_profile(merge_schedule({"magcache": {"ratios": [1.0]}}, section)))
    assert profile["magcache"] == {"ratios": [1.0]}
    assert profile["schedule"]["default"]["steps6"]["computed4"] == table["computed4"]
    # another setting's calibration is added beside, not over, this one
    both = merge_schedule(profile, {"steps6": {"computed3": [0, 2, 5]}}, "long")
    assert both["schedule"]["default"] == profile["schedule"]["default"]
    assert both["schedule"]["long"] == {"steps6": {"computed3": [0, 2, 5]}}
    apply(pipe, "schedule(budget=4)", profile=profile)
    result = generate(pipe, GenerationRequest(prompt=PROMPT, num_inference_steps=6, accel=None))
    assert result.stats["accelerators"]["schedule"]["computed_steps"] == table["computed4"]
    remove(pipe)


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_cli_calibrate_schedule_adds_to_the_profile(tmp_path):
    import os
    import subprocess
    import sys

    import tomllib

    env = {**os.environ, "GENACCEL_PROFILE_DIR": str(tmp_path)}
    profile = tmp_path / "tiny-wan.toml"
    profile.write_text(dump_profile({"model": "tiny-wan", "magcache": {"ratios": [1.0, 0.9]}}))
    bad = subprocess.run(
        [sys.executable, "-m", "genaccel", "calibrate", "--model", "tiny-wan", "--schedule", "--max-span", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode == 2 and "--max-span 1" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genaccel",
            "calibrate",
            "--model",
            "tiny-wan",
            "--schedule",
            "--max-span",
            "2",
            "--steps",
            "4",
            "--prompt",
            PROMPT,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout.strip().splitlines()[-1])["out"] == str(profile)
    log = tmp_path / "tiny-wan.toml.schedule-default.jsonl"
    assert not log.exists()  # finished: the profile holds the errors
    log.write_text('{"plan": {}}\n')  # as a stopped calibration leaves it
    stopped = subprocess.run(
        [
            sys.executable,
            "-m",
            "genaccel",
            "calibrate",
            "--model",
            "tiny-wan",
            "--schedule",
            "--steps",
            "4",
            "--out",
            str(profile),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert stopped.returncode == 2 and "--resume" in stopped.stderr and len(stopped.stderr.strip().splitlines()) == 1
    log.unlink()
    written = tomllib.loads(profile.read_text())
    assert written["magcache"] == {"ratios": [1.0, 0.9]}  # kept
    table = written["schedule"]["default"]["steps4"]
    assert [(i, j) for i, j, _ in table["errors"]] == [(0, 2), (1, 3)]
    assert table["computed4"] == [0, 1, 2, 3] and len(table["computed3"]) == 3
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "genaccel",
            "generate",
            PROMPT,
            "--model",
            "tiny-wan",
            "--steps",
            "4",
            "--accel",
            "schedule(budget=3)",
            "--out",
            str(tmp_path / "v.mp4"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert gen.returncode == 0, gen.stderr
    stats = json.loads(gen.stdout.strip().splitlines()[-1])["accelerator_stats"]["schedule"]
    assert stats["computed_steps"] == table["computed3"]


def test_schedule_stacks_with_token_merging_and_sparse_attention(tiny):
    """Like the other pass caches: the pass is skipped where the schedule says, and on computed passes the
    attention and token accelerators act."""
    pipe = tiny("wan")
    base = generate(pipe, PROMPT, seed=0)
    for other, figure in (
        ("tome(ratio=0.4,cell=1:1:2,dense_steps=0,min_tokens=0)", "kept"),
        ("sta(density=0.3,tile=1:1:2,dense_steps=0,dense_layers=0,max_density=1,block=2)", "sparse_density"),
    ):
        result = generate(pipe, PROMPT, seed=0, accel=f"schedule(steps=[0;2;5;7])+{other}")
        name = other.split("(")[0]
        assert result.stats["skipped_calls"] == 2 * (result.request.num_inference_steps - 4)
        assert figure in str(result.stats["accelerators"][name])
        assert np.isfinite(result.frames).all() and not np.array_equal(result.frames, base.frames)
    remove(pipe)
    np.testing.assert_array_equal(generate(pipe, PROMPT, seed=0).frames, base.frames)


def test_a_stopped_calibration_resumes_from_its_log(tiny, tmp_path, monkeypatch):
    """Each span is logged as it is measured: a calibration killed part-way measures only the rest, and
    ends with the errors of an uninterrupted one."""
    import genaccel.tools.calibrate_schedule as sc
    from genaccel.errors import InputError

    pipe = tiny("wan")
    base = GenerationRequest(num_inference_steps=6)
    whole = calibrate_schedule(pipe, [PROMPT], base=base, max_span=3)["steps6"]
    log = tmp_path / "tiny.toml.schedule-default.jsonl"
    real, calls = sc.generate, []

    def dying(pipe, request, **kwargs):  # the 4th generation is killed
        calls.append(request.accel)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(pipe, request, **kwargs)

    monkeypatch.setattr(sc, "generate", dying)
    with pytest.raises(KeyboardInterrupt):
        calibrate_schedule(pipe, [PROMPT], base=base, max_span=3, log=log)
    assert len(log.read_text().splitlines()) == 1 + 2  # the plan, then the two spans measured before the kill
    calls.clear()
    monkeypatch.setattr(
        sc, "generate", lambda pipe, request, **kw: calls.append(request.accel) or real(pipe, request, **kw)
    )
    resumed = calibrate_schedule(pipe, [PROMPT], base=base, max_span=3, log=log)["steps6"]
    assert len(calls) == 1 + len(skip_spans(6, 3)) - 2  # the reference again, and the spans not yet measured
    assert resumed == whole
    with pytest.raises(InputError, match="holds another calibration \\(differs in: max_span\\)"):
        calibrate_schedule(pipe, [PROMPT], base=base, max_span=2, log=log)
