"""The adherence scorer on rendered clips whose answers are known."""

import json

import numpy as np

from genaccel.cli import main
from genaccel.io.video import write_video
from genaccel.pipelines.score import accuracy, detect_background, score_frames
from genaccel.pipelines.shapes import all_specs, parse_prompt, render_clip


def test_every_prompt_of_the_grammar_is_read_back_from_clean_renders():
    rng = np.random.default_rng(0)
    verdicts = [score_frames(render_clip(spec, 17, 64, 64, rng), spec) for spec in all_specs()]
    acc = accuracy(verdicts)
    assert acc["color"] == 1.0 and acc["direction"] == 1.0 and acc["background"] == 1.0
    assert acc["shape"] >= 0.95


def test_long_setting_frames_too():
    rng = np.random.default_rng(1)
    specs = all_specs()[::7]
    verdicts = [score_frames(render_clip(spec, 33, 128, 128, rng), spec) for spec in specs]
    acc = accuracy(verdicts)
    assert acc["color"] == 1.0 and acc["direction"] == 1.0 and acc["shape"] >= 0.9


def test_a_mismatching_prompt_is_judged_wrong():
    spec = parse_prompt("a red circle moving left on a black background")
    clip = render_clip(spec, 17, 64, 64, np.random.default_rng(2))
    verdict = score_frames(clip, "a blue square moving right on a black background")
    assert (verdict.color, verdict.shape, verdict.motion) == ("red", "circle", "left")
    assert not verdict.color_ok and not verdict.shape_ok and not verdict.direction_ok and not verdict.correct


def test_blank_video_is_wrong_not_an_error():
    verdict = score_frames(np.zeros((9, 32, 32, 3), np.uint8), "a red circle standing still on a black background")
    assert verdict.color is None and not verdict.correct
    assert detect_background(np.full((2, 8, 8, 3), 110, np.uint8)) == "gray"


def test_float_frames_and_noise(tmp_path):
    spec = parse_prompt("a cyan triangle moving up on a gray background")
    clip = render_clip(spec, 17, 64, 64, np.random.default_rng(3)).astype(np.float32) / 255
    noisy = np.clip(clip + np.random.default_rng(4).normal(0, 0.04, clip.shape), 0, 1)
    assert score_frames(noisy, spec).correct


def test_score_command_through_a_compressed_video(tmp_path, capsys):
    spec = parse_prompt("a orange square moving down on a black background")
    clip = render_clip(spec, 17, 64, 64, np.random.default_rng(5))
    path = write_video(clip / 255.0, tmp_path / "v.mp4")
    assert main(["score", str(path), "--prompt", spec.prompt]) == 0
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert verdict["correct"] and verdict["motion"] == "down"
    assert main(["score", str(tmp_path / "missing.mp4"), "--prompt", spec.prompt]) == 2
    assert main(["score", str(path), "--prompt", "a dog"]) == 2
