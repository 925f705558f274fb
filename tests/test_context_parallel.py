"""One video across processes: diffusers' context parallelism (Ulysses) on two CPU processes over gloo,
with an accelerator whose skip decisions must agree across them; and the refusals that need no launch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import genaccel
from genaccel.cli import main
from genaccel.engine.distributed import parse_context_parallel
from genaccel.errors import InputError, ModelError, SpecError
from genaccel.io.video import read_video

PROMPT = "a red circle moving left on a black background"
ACCELERATE = shutil.which("accelerate", path=os.path.dirname(sys.executable))


def test_context_parallel_option_is_parsed():
    assert parse_context_parallel("ulysses=2") == {"ulysses": 2}
    assert parse_context_parallel("ring=2, ulysses=4") == {"ring": 2, "ulysses": 4}
    for bad in ("ulysses", "ring=0", "ring=two", "tensor=2", "ring=2,ring=2", "ulysses=1"):
        with pytest.raises(InputError):
            parse_context_parallel(bad)


def test_families_without_a_plan_and_unlaunched_runs_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="CogVideoX's transformer .* has no context-parallel plan"):
        genaccel.load_pipeline("tiny-cogvideox", device="cpu", context_parallel="ulysses=2")
    with pytest.raises(ModelError, match="needs one process per shard: start it with `accelerate launch"):
        genaccel.load_pipeline("tiny-wan", device="cpu", context_parallel="ulysses=2")


def test_accelerators_that_would_disagree_across_processes_are_refused(tiny):
    pipe = tiny("wan")
    pipe._genaccel_context_parallel = {"ulysses": 2}  # as the loader records it under a launch
    try:
        for spec, reason in [
            ("fbcache", "would skip different passes"),
            ("svg", "one process's shard"),
            ("tome", "one process's shard"),
            ("asymrnr", "one process's shard"),
        ]:
            with pytest.raises(SpecError, match=reason):
                genaccel.prepare(pipe, genaccel.GenerationRequest(prompt=PROMPT, accel=spec))
        genaccel.prepare(pipe, genaccel.GenerationRequest(prompt=PROMPT, accel="teacache+pab"))  # these agree
    finally:
        del pipe._genaccel_context_parallel


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is not installed")
def test_ulysses_on_two_processes_makes_the_single_process_video(tmp_path, capsys):
    options = ["--model", "tiny-wan", "--device", "cpu", "--accel", "teacache", "--json", "--frames", "9"]
    assert main(["generate", PROMPT, "--out", str(tmp_path / "single"), *options]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        str(Path(__file__).parent / "helpers" / "launched_generate.py"),
        PROMPT,
        "--out",
        str(tmp_path / "split"),
        "--context-parallel",
        "ulysses=2",
        *options,
    ]
    run = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    split = json.loads(run.stdout.strip().splitlines()[-1])  # printed by the main process only
    assert len([line for line in run.stdout.splitlines() if line.startswith("{")]) == 1
    assert split["skipped_calls"] == single["skipped_calls"] > 0  # the same passes skipped on both processes
    difference = np.abs(read_video(tmp_path / "split").astype(float) - read_video(tmp_path / "single").astype(float))
    assert difference.max() <= 2 / 255  # the same video (summation order aside)
