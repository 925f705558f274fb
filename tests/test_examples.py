"""The examples run as documented (on the tiny Wan pipeline, to stay fast)."""

import re
import runpy
import sys
from pathlib import Path

import pytest

from genaccel.generation.spec import check_spec

EXAMPLES = Path(__file__).parents[1] / "examples"


def _run(script: str, *args, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return capsys.readouterr().out


def test_python_api_example(monkeypatch, capsys, tmp_path):
    video = tmp_path / "accelerated.mp4"
    out = _run(
        "python_api.py",
        "--model",
        "tiny-wan",
        "--accel",
        "fast",
        "--out",
        str(video),
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert "PSNR" in out and "passes skipped" in out
    assert video.stat().st_size > 0


def test_bench_example(monkeypatch, capsys, tmp_path):
    out = _run("bench.py", "--model", "tiny-wan", "--out", str(tmp_path / "b"), monkeypatch=monkeypatch, capsys=capsys)
    assert out.count("x  PSNR") == 3  # baseline and the two configurations
    assert (tmp_path / "b" / "summary.csv").is_file() and (tmp_path / "b" / "compare.mp4").is_file()


def test_bench_shell_example_uses_valid_specs():
    text = (EXAMPLES / "bench.sh").read_text()
    specs = re.findall(r'--accel "?([^"\s]+)"?', text)
    assert {"quality", "balanced", "fast"} <= set(specs)
    for spec in specs:
        check_spec(spec)
    assert (
        "--prompts benchmarks/eval_prompts.txt" in text and (EXAMPLES.parent / "benchmarks/eval_prompts.txt").is_file()
    )


# Caches and token reduction are swept at the default and the long setting; sparse attention only at the
# long one (the default setting's 320 video tokens are fewer than three attention blocks). Each sweep
# script: the group it measures and the settings it runs.
SWEEPS = {
    "sweep_default.sh": ("caches", {"default"}),
    "sweep_long.sh": ("caches", {"long"}),
    "sweep_caching.sh": ("caches", {"default", "long"}),
    "sweep_sparse.sh": ("sparse", {"long"}),
    "sweep_tokens.sh": ("tokens", {"default", "long"}),
    "sweep_systems.sh": ("systems", {"default", "long"}),
}
GROUP_SETTINGS = {
    "caches": {"default", "long"},
    "sparse": {"long"},
    "tokens": {"default", "long"},
    "systems": {"default", "long"},
}


def _group(cls) -> str:
    """The sweep measuring an accelerator; the KV cache acts only in a stream (benchmarks/stream_cpu.py)."""
    from genaccel.accelerators.base import SLOT_ATTENTION_KERNEL, SLOT_COMPILE, SLOT_KV_CACHE, SLOT_QUANT, SLOT_TOKENS

    if SLOT_KV_CACHE in cls.slots:
        return "stream"
    if cls.slots & {SLOT_COMPILE, SLOT_QUANT}:
        return "systems"
    return "sparse" if SLOT_ATTENTION_KERNEL in cls.slots else "tokens" if SLOT_TOKENS in cls.slots else "caches"


@pytest.mark.parametrize("group", sorted(GROUP_SETTINGS))
def test_sweeps_cover_every_wan_accelerator_at_two_settings(group):
    """Every Wan accelerator is measured alone at two settings of its parameters, at every setting its
    group is swept at."""
    from genaccel.accelerators import ACCELERATORS, unsupported_by
    from genaccel.pipelines.families import WAN

    covered = {}
    for script, (script_group, settings) in SWEEPS.items():
        if script_group != group:
            continue
        text = (EXAMPLES.parent / "benchmarks" / script).read_text()
        specs = re.findall(r'--accel "?([^"\s]+)"?', text)
        for spec in specs:
            check_spec(spec)
        # quant pays only compiled on CPU: a quant configuration with compile counts as quant's
        alone = [s.split("(")[0] for s in specs if "+" not in s or (group == "systems" and s.count("+") == 1)]
        for name in set(alone):
            if alone.count(name) >= 2:
                covered.setdefault(name, set()).update(settings)
        assert "benchmarks/eval_prompts.txt" not in text  # sweeps never see the evaluation set
        for prompts in re.findall(r"--prompts (\S+)", text):
            assert (EXAMPLES.parent / prompts).is_file()
    for name in set(ACCELERATORS) - set(unsupported_by(WAN)):
        if _group(ACCELERATORS[name]) == group:
            assert covered.get(name, set()) >= GROUP_SETTINGS[group], (name, covered.get(name))


def test_tune_presets_script_names_existing_prompt_files():
    text = (EXAMPLES.parent / "benchmarks" / "tune_presets.sh").read_text()
    files = re.findall(r"--(?:prompts|holdout) (\S+)", text)
    assert files and all((EXAMPLES.parent / f).is_file() for f in files)
    assert "benchmarks/eval_prompts.txt" not in text  # held-out prompts are a subset kept in their own file
    assert text.count("--save-as") == 6  # three presets at two settings, one command each


@pytest.mark.slow  # the embedded causal model
def test_stream_example(monkeypatch, capsys, tmp_path):
    from genaccel.io.video import read_video

    video = tmp_path / "stream.mp4"
    out = _run("stream.py", "--chunks", "4", "--out", str(video), monkeypatch=monkeypatch, capsys=capsys)
    assert out.count("chunk ") == 4 and "<- new prompt" in out
    assert read_video(video).shape[0] == 13
