"""A batch under `accelerate launch` on two CPU processes (gloo): one manifest, complete and without
duplicates, after one process is killed mid-batch and the batch is started again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genaccel.generation.batch import MANIFEST

pytestmark = pytest.mark.slow  # two processes under `accelerate launch`

PROMPTS = [
    f"a {color} {shape} moving {direction} on a black background"
    for color, shape, direction in [
        ("red", "circle", "left"),
        ("blue", "square", "up"),
        ("green", "triangle", "right"),
        ("yellow", "circle", "down"),
        ("red", "square", "right"),
        ("blue", "circle", "up"),
    ]
]
LAUNCH = [
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
]


def _launch(args, tmp_path, port, env_extra=None):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parent / "helpers"),
        **(env_extra or {}),
    }
    return subprocess.run(
        [accelerate, "launch", *LAUNCH, str(port), str(Path(__file__).parent / "helpers" / "launched_batch.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None,
    reason="accelerate's launcher is not installed",
)
def test_two_processes_kill_and_resume_leave_one_complete_manifest(tmp_path):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = ["prompts.txt", "--out", "out", "--model", "tiny-wan", "--device", "cpu", "--json"]
    mark = tmp_path / "killed.txt"
    killed = _launch([*args, "--kill-after", "1"], tmp_path, _free_port(), {"KILL_MARK": str(mark)})
    assert killed.returncode != 0 and mark.is_file(), killed.stderr[-2000:]
    out = tmp_path / "out"
    parts = sorted(p.name for p in out.glob("manifest.part-*.jsonl"))
    assert "manifest.part-1.jsonl" in parts  # the killed process had listed its first video
    assert mark.read_text() in (out / "manifest.part-1.jsonl").read_text()

    resumed = _launch(args, tmp_path, _free_port())
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["total"] == len(PROMPTS) and summary["skipped"] >= 1
    assert summary["done"] + summary["skipped"] == len(PROMPTS)

    entries = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)) == len(PROMPTS)  # complete, no duplicates
    assert [e["prompt"] for e in entries] == PROMPTS  # in batch order
    assert not list(out.glob("manifest.part-*")) and not list(out.glob(".*"))  # parts folded, nothing staged left
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *(e["out"] for e in entries)])
