"""The shipped embedded model: it loads like a real Wan checkpoint, is the default, stays within
its size budget, and makes videos that the scorer judges right."""

import json
from pathlib import Path

import pytest

from genaccel.models.facts import EMBEDDED, default_model, embedded_model_dir
from genaccel.pipelines.score import score_frames

FOLDER = embedded_model_dir()
pytestmark = pytest.mark.skipif(not (FOLDER / "model_index.json").is_file(), reason="embedded model not trained yet")


def test_it_is_a_wan_checkpoint_in_safetensors_within_budget():
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["transformer"][1] == "WanTransformer3DModel" and index["vae"][1] == "AutoencoderKLWan"
    assert index["text_encoder"][1] == "UMT5EncoderModel"
    weights = [
        p for p in FOLDER.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
    ]
    assert weights and all(p.suffix == ".safetensors" for p in weights)  # never pickle
    assert sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file()) <= 40 * 2**20


def test_loads_with_plain_diffusers():
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(FOLDER, local_files_only=True)
    assert pipe.vae.config.z_dim == pipe.transformer.config.in_channels


def test_it_is_the_default_model():
    assert default_model() == EMBEDDED


def test_settings_are_documented_and_long_has_2000_tokens(embedded):
    from genaccel.models.facts import model_defaults

    default, long = model_defaults(embedded, "default"), model_defaults(embedded, "long")
    assert default["num_inference_steps"] >= 20 and long["num_inference_steps"] >= 20
    latent = lambda d: ((d["num_frames"] - 1) // 4 + 1) * (d["height"] // 8) * (d["width"] // 8)  # noqa: E731
    assert latent(long) >= 2000
    readme = (Path(__file__).parents[1] / "docs" / "embedded-model.md").read_text()  # the settings table
    for d in (default, long):
        assert f"{d['width']}x{d['height']} | {d['num_frames']} | {d['num_inference_steps']}" in readme


@pytest.mark.slow
@pytest.mark.parametrize(
    "prompt, seed",
    [
        ("a red circle moving left on a black background", 0),
        ("a blue square moving up on a gray background", 1),
        ("a yellow triangle moving right on a black background", 2),
    ],
)
def test_generated_videos_follow_their_prompts(embedded, prompt, seed):
    import genaccel

    genaccel.remove(embedded)
    result = genaccel.generate(embedded, prompt, seed=seed)
    verdict = score_frames(result.frames, prompt)
    # What the checkpoint does every time: colour and background (100% on the 48 evaluation prompts).
    assert verdict.color_ok and verdict.background_ok, verdict


EVAL_PROMPTS = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_prompts.txt"
SUBSET = 10  # the first evaluation prompts, each with seed = its line number (as benchmarks/adherence.py)
MIN_SHAPE_OK, MIN_DIRECTION_OK = 8, 8  # the checkpoint: 10 and 10 of 10 (margin for other CPUs' float rounding)


@pytest.mark.slow
def test_shape_and_motion_follow_the_prompt_on_most_evaluation_prompts(embedded):
    """A regression guard on the trained weights: chance is 1 in 3 for shape and 1 in 5 for motion;
    the shipped checkpoint's own counts on this subset are in benchmarks/results/adherence-default.json."""
    import genaccel

    genaccel.remove(embedded)
    prompts = [l.strip() for l in EVAL_PROMPTS.read_text().splitlines() if l.strip()][:SUBSET]
    verdicts = [score_frames(genaccel.generate(embedded, p, seed=seed).frames, p) for seed, p in enumerate(prompts)]
    assert sum(v.shape_ok for v in verdicts) >= MIN_SHAPE_OK, verdicts
    assert sum(v.direction_ok for v in verdicts) >= MIN_DIRECTION_OK, verdicts
