"""Procedural "moving shapes" clips: the prompt grammar and a fast numpy renderer.

The embedded text-to-video model is trained on clips described by a tiny grammar::

    a {color} {shape} moving {direction} on a {background} background
    a {color} {shape} standing still on a {background} background

A clip is a flat-coloured shape on a flat background. Its size, start position and speed are drawn
from a numpy ``Generator``; "moving X" means the shape's centre travels toward edge X by 30-55% of
the frame over the clip ("up" is toward the top edge, i.e. decreasing row index) while the shape
stays inside the frame; "standing still" means it does not move at all. Shape pixels carry the exact
RGB colour of the table below (no antialiasing), so a pixel is a shape pixel exactly when it differs
from the background colour.

Example::

    rng = np.random.default_rng(0)
    spec = parse_prompt("a red circle moving left on a black background")
    clip = render_clip(spec, frames=17, height=64, width=64, rng=rng)   # uint8 (17, 64, 64, 3)
    clips, prompts = render_dataset(1000, 17, 64, 64, seed=0)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

# The prompt the CLI's examples, the UI and the tiny pipelines start from.
EXAMPLE_PROMPT = "a red circle moving left on a black background"

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "white": (245, 245, 245),
    "magenta": (220, 50, 220),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = DIRECTIONS + ("still",)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "gray": (110, 110, 110)}

# Unit vector (dx, dy) of each direction in image coordinates (y grows downward).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Shape size and motion ranges, as fractions of the frame.
SIZE_RANGE = (0.13, 0.20)  # "radius" r: circle radius; the other shapes scale from it
TRAVEL_RANGE = (0.30, 0.55)  # distance the centre travels over a moving clip, along the motion axis

# Extent of each shape around its centre in units of r: (left, right, top, bottom).
_EXTENTS: dict[str, tuple[float, float, float, float]] = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (0.9, 0.9, 0.9, 0.9),
    # Upward-pointing isosceles triangle with its centroid at the centre: height 2.1 r, base 2.4 r.
    "triangle": (1.2, 1.2, 1.4, 0.7),
}

_PROMPT_RE = re.compile(
    r"^a (?P<color>\w+) (?P<shape>\w+) (?:moving (?P<direction>\w+)|(?P<still>standing still))"
    r" on a (?P<background>\w+) background$"
)


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: ``motion`` is one of ``DIRECTIONS`` or ``"still"``."""

    color: str
    shape: str
    motion: str
    background: str

    def __post_init__(self):
        for field_name, value, allowed in (
            ("color", self.color, tuple(COLORS)),
            ("shape", self.shape, SHAPES),
            ("motion", self.motion, MOTIONS),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field_name} {value!r}; expected one of: {', '.join(allowed)}")

    @property
    def prompt(self) -> str:
        """The grammar's sentence for this spec."""
        motion = "standing still" if self.motion == "still" else f"moving {self.motion}"
        return f"a {self.color} {self.shape} {motion} on a {self.background} background"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return BACKGROUNDS[self.background]


def parse_prompt(text: str) -> ClipSpec:
    """Parse a grammar sentence (case and surrounding/repeated whitespace are ignored).

    Raises ``ValueError`` naming the problem for any text outside the grammar.
    """
    if not isinstance(text, str):
        raise ValueError(f"prompt must be a string, got {type(text).__name__}")
    norm = " ".join(text.lower().split())
    m = _PROMPT_RE.match(norm)
    if m is None:
        raise ValueError(
            f"prompt {text!r} is outside the grammar; expected 'a {{color}} {{shape}} moving {{direction}} on a "
            "{background} background' or 'a {color} {shape} standing still on a {background} background'"
        )
    motion = "still" if m.group("still") else m.group("direction")
    try:
        return ClipSpec(m.group("color"), m.group("shape"), motion, m.group("background"))
    except ValueError as exc:
        raise ValueError(f"prompt {text!r}: {exc}") from None


def all_specs() -> list[ClipSpec]:
    """Every spec of the grammar (8 colours x 3 shapes x 5 motions x 2 backgrounds = 240), in a fixed order."""
    return [ClipSpec(*combo) for combo in itertools.product(COLORS, SHAPES, MOTIONS, BACKGROUNDS)]


def random_spec(rng: np.random.Generator) -> ClipSpec:
    """A uniformly drawn spec (each factor independently uniform)."""
    colors, backgrounds = tuple(COLORS), tuple(BACKGROUNDS)
    return ClipSpec(
        colors[rng.integers(len(colors))],
        SHAPES[rng.integers(len(SHAPES))],
        MOTIONS[rng.integers(len(MOTIONS))],
        backgrounds[rng.integers(len(backgrounds))],
    )


def _trajectory(spec: ClipSpec, frames: int, height: int, width: int, r: float, rng: np.random.Generator):
    """Centre (cx, cy) per frame, each float64 (F,), keeping the whole shape inside the frame."""
    left, right, top, bottom = (e * r for e in _EXTENTS[spec.shape])
    lo = np.array([left, top])
    hi = np.array([width - right, height - bottom])
    size = np.array([width, height], dtype=np.float64)
    start = rng.uniform(lo, hi)  # a valid centre for "still" and for the perpendicular axis
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    centre = np.repeat(start[None, :], frames, axis=0)
    if spec.motion != "still":
        vec = np.array(DIRECTION_VECTORS[spec.motion], dtype=np.float64)
        axis = int(np.flatnonzero(vec)[0])
        travel = min(rng.uniform(*TRAVEL_RANGE) * size[axis], hi[axis] - lo[axis])
        # Start far enough from the target edge for the whole travel to fit.
        slack = max(hi[axis] - lo[axis] - travel, 0.0)
        s = lo[axis] + rng.uniform() * slack
        if vec[axis] < 0:
            s += travel
        centre[:, axis] = s + vec[axis] * travel * t
    return centre[:, 0], centre[:, 1]


def shape_mask(shape: str, cx: np.ndarray, cy: np.ndarray, r: float, height: int, width: int) -> np.ndarray:
    """Boolean (F, H, W) mask of ``shape`` with centre (cx[f], cy[f]) and size ``r`` (pixel centres at +0.5)."""
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    dx = xs[None, None, :] - np.asarray(cx, dtype=np.float32)[:, None, None]  # (F, 1, W)
    dy = ys[None, :, None] - np.asarray(cy, dtype=np.float32)[:, None, None]  # (F, H, 1)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = 0.9 * r
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":
        top, bottom, half_base = 1.4 * r, 0.7 * r, 1.2 * r
        # Half-width grows linearly from 0 at the apex to half_base at the base.
        return (dy >= -top) & (dy <= bottom) & (np.abs(dx) <= half_base * (dy + top) / (top + bottom))
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(spec: ClipSpec, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``spec`` as a uint8 array (frames, height, width, 3); size, start and speed come from ``rng``."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"clip too small: {frames} frames of {height}x{width}")
    r = rng.uniform(*SIZE_RANGE) * min(height, width)
    cx, cy = _trajectory(spec, frames, height, width, r, rng)
    mask = shape_mask(spec.shape, cx, cy, r, height, width)
    palette = np.array([spec.background_rgb, spec.rgb], dtype=np.uint8)
    return np.take(palette, mask.view(np.uint8).reshape(-1), axis=0).reshape(frames, height, width, 3)


def render_dataset(n: int, frames: int, height: int, width: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` random clips as uint8 (n, frames, height, width, 3) and their prompts; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    clips = np.empty((n, frames, height, width, 3), dtype=np.uint8)
    prompts = []
    for i in range(n):
        spec = random_spec(rng)
        clips[i] = render_clip(spec, frames, height, width, rng)
        prompts.append(spec.prompt)
    return clips, prompts


def foreground_mask(clips: np.ndarray, prompts_or_specs) -> np.ndarray:
    """Boolean (..., F, H, W) mask of the shape pixels of rendered ``clips`` (pixels differing from the background)."""
    specs = [s if isinstance(s, ClipSpec) else parse_prompt(s) for s in prompts_or_specs]
    bg = np.array([s.background_rgb for s in specs], dtype=np.uint8).reshape(len(specs), 1, 1, 1, 3)
    return np.any(clips.reshape(len(specs), *clips.shape[-4:]) != bg, axis=-1).reshape(clips.shape[:-1])


# --- Reading a clip back: a simple pixel-statistics check of colour, shape and motion. ---

_SHAPE_AREA = {"circle": np.pi, "square": 1.8**2, "triangle": 0.5 * 2.4 * 2.1}  # area / r^2 of each shape
STILL_THRESHOLD = 0.12  # a centre displacement below this fraction of the frame reads as "still"


def analyze_clip(clip: np.ndarray, background: str) -> ClipSpec | None:
    """Guess the spec of a (possibly decoded, imperfect) clip uint8 (F, H, W, 3) on a known background.

    Colour: majority vote of the palette colour nearest to each pixel clearly off the background.
    Shape pixels: those nearer to that colour than to the background. Motion: the centre of mass moving
    by at least ``STILL_THRESHOLD`` of the frame, along its dominant axis; "still" otherwise. Shape:
    per frame, the best intersection-over-union among circle/square/triangle templates of the same
    area and centroid, majority over frames. Returns None when no shape pixels are found.
    """
    frames, height, width, _ = clip.shape
    x = clip.astype(np.float32)
    bg = np.asarray(BACKGROUNDS[background], dtype=np.float32)
    names = list(COLORS)
    palette = np.asarray([COLORS[c] for c in names], dtype=np.float32)
    d_bg = np.linalg.norm(x - bg, axis=-1)
    candidates = x[d_bg > 40.0]
    if len(candidates) == 0:
        return None
    nearest = np.argmin(((candidates[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    color = names[int(np.bincount(nearest, minlength=len(names)).argmax())]
    fg = np.linalg.norm(x - palette[names.index(color)], axis=-1) < d_bg  # (F, H, W)

    counts = fg.sum(axis=(1, 2))
    valid = np.flatnonzero(counts > 0)
    if len(valid) == 0:
        return None
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    cy = (fg.sum(axis=2) * ys).sum(axis=1)[valid] / counts[valid]
    cx = (fg.sum(axis=1) * xs).sum(axis=1)[valid] / counts[valid]
    motion = "still"
    if len(valid) > 1:
        t = valid.astype(np.float64)
        span = t[-1] - t[0]
        # Least-squares slope times the clip's length: robust to a noisy first or last frame.
        dx = np.polyfit(t, cx, 1)[0] * (frames - 1) if span > 0 else 0.0
        dy = np.polyfit(t, cy, 1)[0] * (frames - 1) if span > 0 else 0.0
        rx, ry = dx / width, dy / height
        if max(abs(rx), abs(ry)) >= STILL_THRESHOLD:
            motion = ("right" if rx > 0 else "left") if abs(rx) >= abs(ry) else ("down" if ry > 0 else "up")

    votes = dict.fromkeys(SHAPES, 0)
    for k, f in enumerate(valid):
        area = float(counts[f])
        best, best_iou = None, -1.0
        for shape in SHAPES:
            r = np.sqrt(area / _SHAPE_AREA[shape])
            tmpl = shape_mask(shape, cx[k : k + 1], cy[k : k + 1], r, height, width)[0]
            iou = (tmpl & fg[f]).sum() / max((tmpl | fg[f]).sum(), 1)
            if iou > best_iou:
                best, best_iou = shape, iou
        votes[best] += 1
    shape = max(votes, key=votes.get)
    return ClipSpec(color, shape, motion, background)
