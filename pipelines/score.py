"""Prompt adherence from the frames alone, for videos of the shapes grammar.

The scorer finds the background (the grammar colour nearest to the frame border), then reads the
shape's colour, kind and motion with `shapes.analyze_clip`, and compares them with the prompt. It
needs no reference video, so it measures quality independently of the unaccelerated baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from genaccel.io.video import to_uint8
from genaccel.pipelines.shapes import BACKGROUNDS, ClipSpec, analyze_clip, parse_prompt


@dataclass
class Verdict:
    """What the scorer read from a video, and whether each attribute matches the prompt."""

    prompt: str
    color: str | None
    shape: str | None
    motion: str | None
    background: str
    color_ok: bool
    shape_ok: bool
    direction_ok: bool
    background_ok: bool

    @property
    def correct(self) -> bool:
        return self.color_ok and self.shape_ok and self.direction_ok

    def to_dict(self) -> dict:
        return {**asdict(self), "correct": self.correct}


def detect_background(frames: np.ndarray) -> str:
    """The grammar background nearest to the median colour of the frames' borders."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1).reshape(-1, 3)
    median = np.median(border.astype(np.float32), axis=0)
    return min(BACKGROUNDS, key=lambda name: float(np.linalg.norm(median - np.asarray(BACKGROUNDS[name]))))


def score_frames(frames: np.ndarray, prompt: str | ClipSpec) -> Verdict:
    """Judge (F, H, W, 3) frames (uint8, or floats in [0, 1]) against a grammar prompt."""
    expected = prompt if isinstance(prompt, ClipSpec) else parse_prompt(prompt)
    clip = to_uint8(frames)[..., :3]
    background = detect_background(clip)
    seen = analyze_clip(clip, background)
    if seen is None:
        return Verdict(
            expected.prompt, None, None, None, background, False, False, False, background == expected.background
        )
    return Verdict(
        prompt=expected.prompt,
        color=seen.color,
        shape=seen.shape,
        motion=seen.motion,
        background=background,
        color_ok=seen.color == expected.color,
        shape_ok=seen.shape == expected.shape,
        direction_ok=seen.motion == expected.motion,
        background_ok=background == expected.background,
    )


class ShapesScorer:
    """Adherence scorer for the shapes grammar (the embedded model's prompts), for `genaccel bench`.

    A scorer has a `name`, the `columns` it checks, `applies(prompt)`, and `score(frames, prompt)`
    returning a dict with "correct" and "<column>_ok" for each column (plus whatever it read).
    """

    name = "shapes"
    columns = ("color", "shape", "direction")

    def applies(self, prompt: str) -> bool:
        try:
            parse_prompt(prompt)
        except ValueError:
            return False
        return True

    def score(self, frames: np.ndarray, prompt: str) -> dict:
        return score_frames(frames, prompt).to_dict()

    def describe(self, verdict: dict) -> str:
        """One phrase for a verdict: "correct", or what was read instead."""
        if verdict["correct"]:
            return "correct"
        return f"read {verdict['color'] or '?'} {verdict['shape'] or '?'} {verdict['motion'] or '?'}"


SCORERS = {"shapes": ShapesScorer()}


def scorer_named(name: str | None):
    """The adherence scorer called `name`; None for "none"."""
    if name in (None, "none"):
        return None
    if name not in SCORERS:
        from genaccel.errors import InputError

        raise InputError(f"unknown adherence scorer '{name}' (known: {', '.join(SCORERS)}, none)")
    return SCORERS[name]


def accuracy(verdicts: list[Verdict]) -> dict[str, float]:
    """Fraction of verdicts correct in colour, shape, direction, background, and all three."""
    n = max(len(verdicts), 1)
    return {
        "color": sum(v.color_ok for v in verdicts) / n,
        "shape": sum(v.shape_ok for v in verdicts) / n,
        "direction": sum(v.direction_ok for v in verdicts) / n,
        "background": sum(v.background_ok for v in verdicts) / n,
        "all": sum(v.correct for v in verdicts) / n,
    }
