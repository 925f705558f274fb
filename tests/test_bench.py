"""genaccel bench: quality metrics, peak memory, the interleaved resumable sweep and its report."""

import csv
import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from genaccel.cli import main
from genaccel.errors import InputError, SpecError
from genaccel.pipelines.shapes import ClipSpec, render_clip
from genaccel.tools.bench import BenchPlan, run_bench
from genaccel.tools.bench.quality import compare_videos, lpips, lpips_unavailable_reason, psnr, ssim, temporal_error
from genaccel.tools.bench.report import compare_frames, pareto_front

PROMPTS = ["a red circle moving left on a black background", "a blue square moving up on a gray background"]
NO_SKIP = "teacache(threshold=0)"  # computes every pass: must equal the baseline exactly
SKIPPING = "teacache(threshold=1e9,coefficients=identity)"  # skips everything it may


def _clip(motion="left", seed=0):
    return (
        render_clip(ClipSpec("red", "circle", motion, "black"), 9, 32, 32, np.random.default_rng(seed)).astype(
            np.float32
        )
        / 255
    )


# ----------------------------------------------------------------------------- quality
def test_psnr_known_values():
    ref = np.full((3, 8, 8, 3), 0.5, np.float32)
    assert psnr(ref, ref) == math.inf
    assert psnr(ref, ref + 0.1) == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    assert psnr(ref, ref + 0.01) == pytest.approx(40.0, abs=1e-2)
    assert psnr((ref * 255).astype(np.uint8), (ref * 255).astype(np.uint8)) == math.inf


def test_ssim_is_one_for_identical_and_drops_with_noise():
    ref = _clip()
    noisy = np.clip(ref + np.random.default_rng(0).normal(0, 0.2, ref.shape), 0, 1).astype(np.float32)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)
    assert ssim(ref, noisy) < 0.6
    assert ssim(ref, np.clip(ref + 0.01, 0, 1)) > ssim(ref, noisy)


def test_temporal_error_sees_motion_not_brightness():
    ref = _clip("left")
    brighter = np.clip(ref + 0.05, 0, 1)  # same motion, different pixels (clipping aside)
    assert temporal_error(ref, ref) == 0.0
    assert temporal_error(ref, brighter) < 0.01 < temporal_error(ref, _clip("right"))
    assert temporal_error(ref[:1], ref[:1]) == 0.0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8, 3)))


def test_lpips_is_unavailable_not_zero_without_local_weights(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert lpips_unavailable_reason()  # says why (no torchvision, or no weights in the cache)
    ref = _clip()
    assert lpips(ref, ref) is None
    assert compare_videos(ref, ref)["lpips"] is None


# ----------------------------------------------------------------------------- plan
def test_plan_puts_the_baseline_first_once_and_rotates_the_order():
    plan = BenchPlan(accels=["fast", "none", "teacache", "fast"], prompts=PROMPTS, seeds=[0, 1], repeat=2)
    assert plan.accels == ["none", "fast", "teacache"]
    assert plan.items() == [(PROMPTS[0], 0), (PROMPTS[0], 1), (PROMPTS[1], 0), (PROMPTS[1], 1)]
    assert len(plan.rounds()) == 8
    orders = [plan.order(k) for k in range(3)]
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    assert {o[0] for o in orders} == {0, 1, 2}  # every configuration takes every position


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompts": []}, "prompt"),
        ({"prompts": ["  "]}, "prompt"),
        ({"seeds": []}, "seed"),
        ({"seeds": [-1]}, "seed must be between"),
        ({"repeat": 0}, "repeat"),
    ],
)
def test_plan_rejects_bad_input(kwargs, message):
    with pytest.raises(InputError, match=message):
        BenchPlan(**{"accels": [], "prompts": PROMPTS, **kwargs})


def test_pareto_front():
    points = [(1.5, 30.0), (2.0, 25.0), (1.4, 28.0), (3.0, 20.0), (2.0, 24.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_compare_frames_layout():
    base = _clip()
    frames = compare_frames("p", [("none", base), ("a", base), ("b", _clip("right"))], min_side=64)
    assert frames.dtype == np.uint8 and frames.shape[0] == base.shape[0]
    assert frames.shape[2] == 3 * 64  # baseline | accelerated | difference, each enlarged to 64 px
    row = (frames.shape[1] - 16) // 2  # title, then two rows of (label + tiles)
    same_diff = frames[:, 16 + 16 : 16 + row, 128:]
    other_diff = frames[:, 16 + row + 16 :, 128:]
    assert same_diff.max() == 0 and other_diff.max() > 0


# ----------------------------------------------------------------------------- sweep
def _rows(out):
    return [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]


def test_sweep_measures_every_configuration_against_the_baseline(tiny, tmp_path):
    pipe = tiny("wan")
    plan = BenchPlan(accels=[NO_SKIP, SKIPPING], prompts=PROMPTS, seeds=[0, 1], repeat=2, warmup=1)
    rows = run_bench(pipe, plan, tmp_path, progress=False)
    assert len(rows) == 4 * 2 * 3
    assert {(r["item"], r["repeat"], r["config"]) for r in rows} == {
        (i, k, c) for i in range(4) for k in range(2) for c in range(3)
    }
    by = {c: [r for r in rows if r["config"] == c] for c in range(3)}
    assert all(r["psnr"] is None and r["accel"] == "none" for r in by[0])
    assert all(r["identical"] and r["ssim"] == pytest.approx(1.0) for r in by[1])  # computes everything
    assert all(r["skipped_calls"] > 0 and 0 < r["psnr"] < 100 and not r["identical"] for r in by[2])
    assert all(r["adherence"] is not None and r["adherence"]["correct"] in (True, False) for r in rows)
    assert all(r["accelerator_stats"]["teacache"]["state_bytes"] > 0 for r in by[1] + by[2])  # the meter is on
    positions = {(r["config"], r["position"]) for r in rows}
    assert len(positions) == 9  # interleaved: each configuration ran in each position

    with (tmp_path / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert {
        "accel",
        "speedup",
        "psnr",
        "ssim",
        "adherence",
        "adherence_color",
        "adherence_shape",
        "adherence_direction",
        "peak_memory_bytes",
    } <= set(summary[0])
    assert [s["accel"] for s in summary] == ["none", NO_SKIP, SKIPPING]
    assert float(summary[0]["speedup"]) == 1.0 and summary[0]["psnr"] == ""
    assert float(summary[1]["psnr"]) == 100.0 and float(summary[2]["skipped_fraction"]) > 0.3
    assert "| `none` |" in (tmp_path / "summary.md").read_text()
    from genaccel.io.video import read_video

    assert (tmp_path / "pareto.png").stat().st_size > 1000
    compare = read_video(tmp_path / "compare.mp4")
    assert compare.shape[0] == rows[0]["num_frames"]

    # benchmarks/compare_runs.py reads this summary: a run compared with itself differs by nothing.
    compare_runs = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "compare_runs.py"))
    table = compare_runs["compare"](compare_runs["read_summary"](tmp_path), compare_runs["read_summary"](tmp_path))
    assert len(table) == 2 + 3 and all("| +0.0% |" in line for line in table[2:])


def test_sweep_resumes_and_refuses_a_different_plan(tiny, tmp_path):
    pipe = tiny("wan")
    plan = BenchPlan(accels=[SKIPPING], prompts=PROMPTS, seeds=[0], warmup=0)
    run_bench(pipe, plan, tmp_path, progress=False)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # As if interrupted during the second round: its rows were never written.
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")
    rounds = []
    rows = run_bench(pipe, plan, tmp_path, progress=False, on_round=rounds.append)
    assert len(rounds) == 1 and {r["item"] for r in rounds[0]} == {1}
    assert len(rows) == 4 and sorted((r["item"], r["config"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rounds.clear()
    run_bench(pipe, plan, tmp_path, progress=False, on_round=rounds.append)
    assert rounds == []  # nothing left to run
    with pytest.raises(InputError, match="different sweep"):
        run_bench(pipe, BenchPlan(accels=["fast"], prompts=PROMPTS), tmp_path, progress=False)


def test_sweep_checks_specs_before_running(tiny, tmp_path):
    with pytest.raises(SpecError):
        run_bench(tiny("wan"), BenchPlan(accels=["fastercache"], prompts=PROMPTS), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    # a spec that parses but cannot be built (no calibrated profile for this model) is refused up front too,
    # not at its turn in the sweep
    pipe = tiny("wan")
    with pytest.raises(SpecError, match="genaccel calibrate"):
        run_bench(
            pipe,
            BenchPlan(accels=["teacache", "tome(schedule=profile)"], prompts=PROMPTS),
            tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out").exists()
    from genaccel.engine.acceleration import acceleration_of

    assert acceleration_of(pipe) is None  # nothing left applied


@pytest.mark.parametrize("family", ["wan22", "cogvideox", "hunyuanvideo", "ltx", "latte", "mochi"])
def test_bench_runs_on_every_family(tiny, tmp_path, family):
    rows = run_bench(tiny(family), BenchPlan(accels=["fast"], prompts=PROMPTS[:1], warmup=0), tmp_path, progress=False)
    assert len(rows) == 2 and rows[1]["skipped_calls"] + rows[1]["attention_reused"] > 0
    assert rows[1]["psnr"] is None or rows[1]["psnr"] > 0


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow  # measures each configuration's memory in a fresh process
def test_cli_bench(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "--model",
                "tiny-wan",
                "--accel",
                SKIPPING,
                "--prompt",
                PROMPTS[0],
                "--seeds",
                "0,1",
                "--warmup",
                "0",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["accel"] for r in result["summary"]] == ["none", SKIPPING]
    assert result["summary"][1]["speedup"] > 0 and len(_rows(out)) == 4
    assert {p.name for p in out.iterdir()} >= {
        "results.jsonl",
        "summary.csv",
        "summary.md",
        "pareto.png",
        "compare.mp4",
        "memory.json",
    }
    # Peak memory of each configuration, measured in a fresh process: at least torch and the model.
    assert all(r["peak_memory_bytes"] > 100 * 2**20 for r in result["summary"])


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "needs prompts"),
        (["--prompt", PROMPTS[0], "--accel", "nosuch"], "nosuch"),
        (["--prompt", PROMPTS[0], "--seeds", "a"], "seeds"),
        (["--prompt", PROMPTS[0], "--model", "tiny-wan", "--frames", "6"], "frame count"),
    ],
)
def test_cli_bench_errors_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "bench"
    assert main(["bench", "--model", "tiny-wan", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
