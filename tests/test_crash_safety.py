"""Crash safety: a batch killed outright (SIGKILL) at seeded moments, and resumed each time, ends with every item
exactly once in the manifest, every video readable with its frame count, and no temporary file left; a killed
`generate` leaves nothing under its target name; a torn manifest line is tolerated.

The kills land at named points (`genaccel.io.failpoints`): deterministic, unlike a timer, and each one is a moment
that matters (a temporary file just created, a video encoded but not renamed, a manifest line written before
its video is in place...).
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genaccel.generation.batch import MANIFEST, parse_items, run_batch
from genaccel.generation.request import GenerationRequest
from genaccel.io.failpoints import ENV, POINTS
from genaccel.io.video import read_video

PROMPTS = [
    f"a {color} circle moving {direction} on a black background"
    for color, direction in [
        ("red", "left"),
        ("blue", "up"),
        ("green", "right"),
        ("yellow", "down"),
        ("white", "left"),
        ("cyan", "up"),
    ]
]
FRAMES = 5  # tiny-wan, --frames 5 --steps 1: each item takes a fraction of a second
RUN = ["--model", "tiny-wan", "--device", "cpu", "--frames", str(FRAMES), "--steps", "1", "--json"]


def _genaccel(args, cwd, kill_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(ENV, None)
    if kill_at:
        env[ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "genaccel", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _check_complete(out: Path, fmt: str) -> None:
    lines = (out / MANIFEST).read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line complete
    assert [e["prompt"] for e in entries] == PROMPTS  # every item exactly once, in batch order
    for entry in entries:
        assert len(read_video(out / entry["out"])) == FRAMES
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *(e["out"] for e in entries)])  # nothing else


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
@pytest.mark.parametrize("fmt, count", [("mp4", len(POINTS)), ("png", 3)])
def test_a_batch_killed_at_seeded_moments_resumes_to_a_complete_folder(tmp_path, fmt, count):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = ["batch", "prompts.txt", "--out", "out", "--format", fmt, *RUN]
    moments = random.Random(21).sample(POINTS, count)  # mp4: every point once, in a seeded order
    killed = 0
    for point in moments:
        run = _genaccel(args, tmp_path, kill_at=point)
        assert run.returncode in (0, -signal.SIGKILL), run.stderr[-2000:]
        killed += run.returncode == -signal.SIGKILL
        out = tmp_path / "out"
        if out.is_dir():
            for line in (out / MANIFEST).read_text().splitlines() if (out / MANIFEST).exists() else []:
                name = json.loads(line)["out"]
                # A video listed in the manifest is in place, or its staged copy is, waiting for the resume.
                assert (out / name).exists() or list(out.glob(f".{Path(name).stem}-partial-*"))
    assert killed >= count - 1  # the points were reached (the last may find the batch finished)
    final = _genaccel(args, tmp_path)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["done"] + summary["skipped"] == len(PROMPTS)
    _check_complete(tmp_path / "out", fmt)


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_a_killed_generate_leaves_nothing_under_the_target_name(tmp_path):
    for point in ("video:temp-created", "video:encoded"):
        run = _genaccel(["generate", PROMPTS[0], "--out", "clip.mp4", *RUN], tmp_path, kill_at=point)
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        assert not (tmp_path / "clip.mp4").exists()
        assert [p.name for p in tmp_path.glob(".clip.mp4.genaccel-*")]  # what the killed writer left...
    run = _genaccel(["generate", PROMPTS[0], "--out", "clip.mp4", *RUN], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(read_video(tmp_path / "clip.mp4")) == FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # ...the next write to it removed


def test_a_torn_manifest_line_is_tolerated(tiny, tmp_path):
    pipe = tiny("wan")
    items = parse_items(
        "\n".join(PROMPTS[:3]), ".txt", base=GenerationRequest(num_frames=FRAMES, num_inference_steps=1)
    )
    out = tmp_path / "out"
    run_batch(pipe, items, out, fmt="gif", progress=False)
    whole = (out / MANIFEST).read_text()
    last = whole.splitlines()[-1]
    # A kill in the middle of appending the last item's line: its video was never renamed into place.
    (out / MANIFEST).write_text(whole[: len(whole) - len(last) - 1] + last[: len(last) // 2])
    (out / json.loads(last)["out"]).unlink()
    summary = run_batch(pipe, items, out, fmt="gif", progress=False)
    assert (summary["done"], summary["skipped"]) == (1, 2)  # only the torn item is made again
    text = (out / MANIFEST).read_text()
    assert text.endswith("\n") and [json.loads(line)["prompt"] for line in text.splitlines()] == PROMPTS[:3]


def test_a_listed_but_unrenamed_video_is_put_in_place_not_remade(tiny, tmp_path, monkeypatch):
    """A kill between the manifest line and the rename: the resume renames the staged video it lists."""
    import genaccel.generation.batch as batch

    pipe = tiny("wan")
    items = parse_items(PROMPTS[0], ".txt")
    out = tmp_path / "out"

    def killed(staged, target, earlier):
        raise KeyboardInterrupt  # stands in for the kill: nothing after the manifest line happens

    monkeypatch.setattr(batch, "_promote", killed)
    with pytest.raises(KeyboardInterrupt):
        run_batch(pipe, items, out, fmt="gif", progress=False)
    monkeypatch.undo()
    staged = list(out.glob(".*-partial-*.gif"))
    assert len(staged) == 1 and not [p for p in out.glob("*.gif") if not p.name.startswith(".")]
    summary = run_batch(pipe, items, out, fmt="gif", progress=False)
    assert (summary["done"], summary["skipped"]) == (0, 1)  # not generated again
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, f"{items[0].name}.gif"])


def test_a_torn_log_line_is_cut_so_its_work_reruns(tmp_path):
    from genaccel.io.files import append_line, read_log

    log = tmp_path / "trials.jsonl"
    append_line(log, json.dumps({"n": 1}))
    with open(log, "a") as f:
        f.write('{"n": 2, "spe')  # a kill in the middle of the second append
    assert read_log(log) == [{"n": 1}]
    assert log.read_text() == '{"n": 1}\n'
    append_line(log, json.dumps({"n": 2}))
    assert read_log(log) == [{"n": 1}, {"n": 2}]
    assert read_log(tmp_path / "absent.jsonl") == []


def test_a_resumed_run_must_have_the_same_plan(tmp_path):
    from genaccel.errors import InputError
    from genaccel.io.files import check_or_write_plan

    plan = tmp_path / "plan.json"
    check_or_write_plan(plan, {"model": "tiny", "steps": 30}, "a different sweep")
    check_or_write_plan(plan, {"model": "tiny", "steps": 30}, "a different sweep")  # same plan: resumes
    with pytest.raises(InputError, match=r"holds a different sweep \(differs in: seeds, steps\)"):
        check_or_write_plan(plan, {"model": "tiny", "steps": 20, "seeds": [1]}, "a different sweep")
    assert json.loads(plan.read_text()) == {"model": "tiny", "steps": 30}
