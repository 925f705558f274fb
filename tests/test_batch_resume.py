"""Batch resume edge cases: a redo interrupted before it finishes, redone frame folders, and items whose
memory options are unset (they mean the defaults, not what the item before left)."""

import json

import pytest

from genaccel.generation.batch import MANIFEST, parse_items, run_batch
from genaccel.io.video import read_video

PROMPT = "a red circle moving left on a black background"


def _entries(out):
    return {e["name"]: e for e in map(json.loads, (out / MANIFEST).read_text().splitlines())}


def _items(lines):
    return parse_items("\n".join(json.dumps(line) for line in lines), ".jsonl")


class Stop(Exception):
    pass


def _stop_at_first_step(step, total):
    raise Stop


@pytest.mark.parametrize("fmt", ["gif", "png"])
def test_an_interrupted_redo_keeps_the_earlier_video_listed(tiny, tmp_path, fmt):
    pipe = tiny("wan")
    out = tmp_path / "out"
    run_batch(pipe, _items([{"prompt": PROMPT, "name": "a", "seed": 1, "steps": 2}]), out, fmt=fmt, progress=False)
    first = _entries(out)["a"]
    asked_again = _items([{"prompt": PROMPT, "name": "a", "seed": 2, "steps": 2}])
    with pytest.raises(Stop):  # e.g. the UI's cancel, between denoising steps of the redo
        run_batch(pipe, asked_again, out, fmt=fmt, progress=False, step_callback=_stop_at_first_step)
    assert _entries(out)["a"] == first and (out / first["out"]).exists()  # still listed: still genaccel's
    summary = run_batch(pipe, asked_again, out, fmt=fmt, progress=False)
    assert summary["done"] == 1 and _entries(out)["a"]["seed"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, first["out"]])  # replaced in place
    assert read_video(out / first["out"]).shape[0] == 9


def test_unset_memory_options_in_a_batch_mean_the_defaults(tiny, tmp_path):
    pipe = tiny("wan")
    out = tmp_path / "out"
    items = _items(
        [
            {"prompt": PROMPT, "name": "a", "steps": 2, "offload": "group", "vae_tiling": True},
            {"prompt": PROMPT, "name": "b", "steps": 2},
        ]
    )
    run_batch(pipe, items, out, progress=False)
    entries = _entries(out)
    assert (entries["a"]["offload"], entries["a"]["vae_tiling"]) == ("group", True)
    assert (entries["b"]["offload"], entries["b"]["vae_tiling"]) == ("none", False)  # not item a's
    assert run_batch(pipe, items, out, progress=False)["skipped"] == 2  # and a re-run finds both as asked
