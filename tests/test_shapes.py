"""The procedural shapes generator: grammar, parsing, rendering semantics, determinism, and the read-back check."""

import numpy as np
import pytest

from genaccel.pipelines.shapes import (
    BACKGROUNDS,
    COLORS,
    DIRECTION_VECTORS,
    DIRECTIONS,
    ClipSpec,
    all_specs,
    analyze_clip,
    foreground_mask,
    parse_prompt,
    random_spec,
    render_clip,
    render_dataset,
)

F, H, W = 17, 64, 64


def _centres(clip: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Centre of mass (x, y) of the shape pixels per frame, in pixels: (F, 2)."""
    mask = np.any(clip != np.array(spec.background_rgb, np.uint8), axis=-1)
    ys, xs = np.mgrid[0 : clip.shape[1], 0 : clip.shape[2]] + 0.5
    n = mask.sum(axis=(1, 2))
    assert (n > 0).all(), "shape missing from a frame"
    return np.stack([(mask * xs).sum(axis=(1, 2)) / n, (mask * ys).sum(axis=(1, 2)) / n], axis=1)


def test_grammar_size_and_prompt_round_trip():
    specs = all_specs()
    assert len(specs) == 240 == len(set(specs))
    for spec in specs:
        assert parse_prompt(spec.prompt) == spec
    assert ClipSpec("red", "circle", "left", "black").prompt == "a red circle moving left on a black background"
    assert ClipSpec("blue", "square", "still", "gray").prompt == "a blue square standing still on a gray background"
    # Case and whitespace are forgiven.
    assert parse_prompt("  A Red  CIRCLE moving up on a gray background ") == ClipSpec("red", "circle", "up", "gray")


@pytest.mark.parametrize(
    "text, words",
    [
        ("a red circle", "outside the grammar"),
        ("", "outside the grammar"),
        ("a red circle moving left on a black background please", "outside the grammar"),
        ("a pink circle moving left on a black background", "color 'pink'"),
        ("a red hexagon moving left on a black background", "shape 'hexagon'"),
        ("a red circle moving sideways on a black background", "motion 'sideways'"),
        ("a red circle moving left on a white background", "background 'white'"),
        ("a red circle standing left on a black background", "outside the grammar"),
    ],
)
def test_parse_errors_are_clear(text, words):
    with pytest.raises(ValueError, match=words):
        parse_prompt(text)


def test_spec_validates_fields():
    with pytest.raises(ValueError, match="unknown shape"):
        ClipSpec("red", "star", "left", "black")
    with pytest.raises(ValueError):
        parse_prompt(None)


def test_colours_exact_and_two_valued():
    rng = np.random.default_rng(0)
    for spec in all_specs()[::7]:
        clip = render_clip(spec, F, H, W, rng)
        assert clip.shape == (F, H, W, 3) and clip.dtype == np.uint8
        mask = foreground_mask(clip[None], [spec])[0]
        assert (clip[mask] == np.array(COLORS[spec.color], np.uint8)).all()
        assert (clip[~mask] == np.array(BACKGROUNDS[spec.background], np.uint8)).all()
        # A plausible shape size: between 2% and 20% of the frame, in every frame.
        frac = mask.mean(axis=(1, 2))
        assert (frac > 0.02).all() and (frac < 0.2).all()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_motion_direction_and_magnitude(direction):
    rng = np.random.default_rng(1)
    vec = np.array(DIRECTION_VECTORS[direction])
    axis = int(np.flatnonzero(vec)[0])
    for shape in ("circle", "square", "triangle"):
        for _ in range(15):
            spec = ClipSpec("green", shape, direction, "gray")
            c = _centres(render_clip(spec, F, H, W, rng), spec)
            travel = (c[-1] - c[0]) * vec  # positive toward the named edge
            size = (W, H)[axis]
            assert travel[axis] >= 0.25 * size, f"{spec.prompt}: travelled {travel[axis]:.1f}px"
            assert travel[axis] <= 0.6 * size
            assert abs((c[-1] - c[0])[1 - axis]) < 1.0  # no drift across the motion axis
            # Monotonic: every step moves toward the edge (or stays, at pixel resolution).
            steps = np.diff(c[:, axis]) * vec[axis]
            assert (steps > -0.5).all()


def test_up_means_toward_top_edge():
    spec = parse_prompt("a white square moving up on a black background")
    c = _centres(render_clip(spec, F, H, W, np.random.default_rng(2)), spec)
    assert c[-1, 1] < c[0, 1]  # row index decreases


def test_still_moves_less_than_three_percent():
    rng = np.random.default_rng(3)
    for shape in ("circle", "square", "triangle"):
        for _ in range(10):
            spec = ClipSpec("cyan", shape, "still", "black")
            c = _centres(render_clip(spec, F, H, W, rng), spec)
            assert np.abs(c - c[0]).max() < 0.03 * W


@pytest.mark.parametrize("size", [(F, H, W), (33, 128, 128), (17, 32, 48)])
def test_shape_stays_inside_frame(size):
    f, h, w = size
    rng = np.random.default_rng(4)
    for _ in range(40):
        spec = random_spec(rng)
        clip = render_clip(spec, f, h, w, rng)
        mask = foreground_mask(clip[None], [spec])[0]
        # Every frame holds the whole shape: its area stays constant up to pixelisation, and its bounding
        # box keeps the shape's aspect ratio (a shape cut by the border would lose both).
        area = mask.sum(axis=(1, 2))
        assert area.min() >= 0.8 * area.max()
        want = {"circle": 1.0, "square": 1.0, "triangle": 2.4 / 2.1}[spec.shape]
        for m in mask:
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            bw, bh = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
            assert abs(bw / bh - want) < 0.2, f"{spec.prompt}: box {bw}x{bh}"


def test_determinism_with_seed():
    a, pa = render_dataset(12, 9, 32, 32, seed=7)
    b, pb = render_dataset(12, 9, 32, 32, seed=7)
    c, pc = render_dataset(12, 9, 32, 32, seed=8)
    assert a.shape == (12, 9, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    assert all(isinstance(parse_prompt(p), ClipSpec) for p in pa)


def test_random_spec_covers_grammar():
    rng = np.random.default_rng(5)
    seen = {random_spec(rng) for _ in range(3000)}
    assert len(seen) == 240


def test_dataset_is_fast():
    import time

    t = time.perf_counter()
    render_dataset(500, F, H, W, seed=0)
    assert time.perf_counter() - t < 5.0


def test_analyze_clip_reads_back_rendered_clips():
    rng = np.random.default_rng(6)
    for _ in range(60):
        spec = random_spec(rng)
        assert analyze_clip(render_clip(spec, F, H, W, rng), spec.background) == spec
    blank = np.zeros((F, H, W, 3), np.uint8)
    assert analyze_clip(blank, "black") is None
