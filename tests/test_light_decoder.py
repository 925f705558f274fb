"""The light decoder: TAEHV's decoder at the published geometries, loading and refusing weights, the request's
`decoder` field through generate, streams, previews, bench configurations and the tuner's decoder group."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import genaccel
from genaccel.decoding.light import LightDecoder, parse_decoder
from genaccel.decoding.taehv import DecoderMemory, TAEHVConfig, TAEHVDecoder, config_from_state_dict
from genaccel.errors import InputError
from genaccel.generation.request import request_from_options, split_configuration

PROMPT = "a red circle moving left on a black background"

# The published TAEHV decoders' geometry (madebyollin/taehv, taehv.py): latent channels, patch size, the
# spatial factor of their VAE, and their decoder's parameter count and a few tensor shapes, as the reference
# builds them (checked against the reference's own module: identical keys, shapes and outputs).
PUBLISHED = {
    "taew2_1": (16, 1, 8, 9_844_611),
    "taehv": (16, 1, 8, 9_844_611),
    "taecvx": (16, 1, 8, 9_844_611),
    "taew2_2": (48, 1 * 2, 16, 9_923_532),
}
REFERENCE_SHAPES = {
    "decoder.1.weight": (256, 16, 3, 3),  # conv from the latents
    "decoder.3.conv.0.weight": (256, 512, 3, 3),  # first memory block: the frame and its memory
    "decoder.7.conv.weight": (256, 256, 1, 1),  # stage 1's temporal grow: stride 1
    "decoder.8.weight": (128, 256, 3, 3),
    "decoder.13.conv.weight": (256, 128, 1, 1),  # stage 2's: stride 2
    "decoder.19.conv.weight": (128, 64, 1, 1),  # stage 3's: stride 2
    "decoder.22.weight": (3, 64, 3, 3),  # to RGB
}


def _published_config(name: str) -> TAEHVConfig:
    channels, patch, _, _ = PUBLISHED[name]
    return TAEHVConfig(latent_channels=channels, patch_size=patch, trim="cogvideox" if name == "taecvx" else "causal")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_decoder_has_the_published_layout(name):
    channels, patch, spatial, count = PUBLISHED[name]
    with torch.device("meta"):
        net = TAEHVDecoder(_published_config(name))
    state = net.state_dict()
    assert sum(t.numel() for t in state.values()) == count
    for key, shape in REFERENCE_SHAPES.items():
        expected = (shape[0], channels, *shape[2:]) if key == "decoder.1.weight" else shape
        if key == "decoder.22.weight":
            expected = (3 * patch**2, *shape[1:])
        assert tuple(state[key].shape) == expected, key
    # the shape is read back off the tensors, given the VAE's spatial factor
    assert config_from_state_dict(state, spatial, _published_config(name).trim) == _published_config(name)


def test_a_real_size_decoder_makes_wan_frame_counts_and_sizes():
    torch.manual_seed(0)
    net = TAEHVDecoder(TAEHVConfig()).eval()  # taew2_1's shape, random weights
    latents = torch.randn(1, 3, 16, 4, 6)  # 3 latent frames of Wan 2.1's 16 channels
    with torch.no_grad():
        frames = net(latents)
    assert frames.shape == (1, 9, 3, 32, 48)  # 1 + 4 * (3 - 1) frames, 8x space
    assert frames.min() >= 0 and frames.max() <= 1
    assert net.frames_out(21) == 81  # Wan 480p: 21 latent frames -> 81


def test_cogvideox_keeps_every_frame_of_an_even_latent_count():
    net = TAEHVDecoder(TAEHVConfig(channels=(8, 8, 8, 8), blocks=1, trim="cogvideox"))
    assert net.frames_out(4) == 16 and net.frames_out(5) == 17


def _small(**changes) -> TAEHVConfig:
    base = dict(channels=(16, 16, 8, 8), blocks=1)
    return TAEHVConfig(**{**base, **changes})


def test_chunk_by_chunk_decoding_equals_the_whole_clip():
    torch.manual_seed(1)
    net = TAEHVDecoder(_small()).eval()
    latents = torch.randn(1, 5, 16, 4, 4)
    with torch.no_grad():
        whole = net(latents)
        memory = DecoderMemory()
        parts = [net(latents[:, :1], memory), net(latents[:, 1:3], memory), net(latents[:, 3:], memory)]
    assert [p.shape[1] for p in parts] == [1, 8, 8]  # the first chunk is trimmed as the clip's start
    torch.testing.assert_close(torch.cat(parts, 1), whole)
    assert memory.frames_made == whole.shape[1] and memory.nbytes() > 0


def test_the_preview_decoder_keeps_one_frame_per_latent_frame():
    torch.manual_seed(2)
    light = LightDecoder(TAEHVDecoder(_small()))
    latents = torch.randn(1, 16, 5, 4, 4)  # a pipeline's BCFHW latents
    full, preview = light.decode(latents), light.preview(latents)
    assert full.shape == (17, 32, 32, 3) and preview.shape == (5, 32, 32, 3)
    # the preview's last frame is the full decode's last frame of each temporal group but for the memory
    # path (which sees only one frame per latent frame): close, not equal
    assert np.abs(preview[-1] - full[-1]).mean() < 0.2


# ----------------------------------------------------------------------------- loading and refusing
def _write(path, config: TAEHVConfig, *, torch_file=False, seed=0):
    torch.manual_seed(seed)
    state = TAEHVDecoder(config).state_dict()
    if torch_file:
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return path


def test_weights_load_from_safetensors_pth_and_a_folder(tmp_path):
    config = _small()
    a = LightDecoder.load(
        _write(tmp_path / "a.safetensors", config), latent_channels=16, spatial_scale=8, temporal_scale=4
    )
    b = LightDecoder.load(
        _write(tmp_path / "b.pth", config, torch_file=True), latent_channels=16, spatial_scale=8, temporal_scale=4
    )
    folder = tmp_path / "light_decoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    _write(folder / "model.safetensors", config)
    c = LightDecoder.load(folder, latent_channels=16, spatial_scale=8, temporal_scale=4)
    latents = torch.randn(1, 16, 2, 4, 4)
    assert np.array_equal(a.decode(latents), b.decode(latents)) and np.array_equal(a.decode(latents), c.decode(latents))


def test_weights_made_for_another_vae_or_not_weights_are_refused_in_one_line(tmp_path):
    path = _write(tmp_path / "w.safetensors", _small())
    with pytest.raises(ValueError, match="decodes 16-channel latents; this VAE makes 48"):
        LightDecoder.load(path, latent_channels=48, spatial_scale=8, temporal_scale=4)
    with pytest.raises(ValueError, match="scales space by 8 and time by 4; this VAE by 8 and 8"):
        LightDecoder.load(path, latent_channels=16, spatial_scale=8, temporal_scale=8)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(ValueError, match="not a readable weights file"):
        LightDecoder.load(garbage, latent_channels=16, spatial_scale=8, temporal_scale=4)
    pickled = tmp_path / "object.pth"
    torch.save({"decoder.1.weight": torch.zeros(1), "note": object()}, pickled)  # needs pickle to load: refused
    with pytest.raises(ValueError, match="not a readable weights file"):
        LightDecoder.load(pickled, latent_channels=16, spatial_scale=8, temporal_scale=4)
    with pytest.raises(ValueError, match="only the base decoder"):
        config_from_state_dict(
            {"decoder.1.weight": torch.zeros(1), "decoder.3.conv.0.weight": torch.zeros(8, 8, 7, 7)}, 8
        )


def test_the_request_field_takes_full_light_or_light_path(tiny, tmp_path):
    from genaccel.generation.prepare import complete
    from genaccel.models.facts import ModelFacts

    path = _write(tmp_path / "w.safetensors", _small())
    assert request_from_options({"prompt": PROMPT}).decoder == "full"
    assert request_from_options({"prompt": PROMPT, "decoder": " Light "}).decoder == "light"
    assert request_from_options({"prompt": PROMPT, "decoder": f"light:{path}"}).decoder == f"light:{path}"
    for bad in ("heavy", "full:x", "light:"):
        with pytest.raises(InputError, match="must be full, light, or light:PATH"):
            request_from_options({"prompt": PROMPT, "decoder": bad})
    assert parse_decoder("light:a.pth") == ("light", "a.pth")
    # the file is looked at once the request meets a model's facts (before a model loads), never before
    facts = ModelFacts.of(tiny("wan"))
    for bad, message in ((f"light:{tmp_path}/missing.pth", "does not exist"), ("light:/etc/hostname", "weights file")):
        request = request_from_options({"prompt": PROMPT, "decoder": bad})
        with pytest.raises(InputError, match=message):
            complete(facts, request)


# ----------------------------------------------------------------------------- through the pipelines
def _for(pipe, tmp_path, name="tae.safetensors"):
    """Random TAEHV weights shaped for a tiny pipeline's VAE, as a file."""
    config = pipe.vae.config
    channels = getattr(config, "z_dim", None) or config.latent_channels
    ups = pipe.vae_scale_factor_spatial.bit_length() - 1
    time_ups = pipe.vae_scale_factor_temporal.bit_length() - 1
    shape = _small(
        latent_channels=channels,
        space_upscale=tuple(i >= 3 - ups for i in range(3)),
        time_upscale=tuple(i >= 3 - time_ups for i in range(3)),
    )
    return _write(tmp_path / name, shape)


@pytest.mark.parametrize("family", ["wan", "hunyuanvideo", "cogvideox"])
def test_light_decoding_and_previews_in_every_family_taehv_covers(tiny, tmp_path, family):
    pipe = tiny(family)
    path = _for(pipe, tmp_path)
    full = genaccel.generate(pipe, PROMPT, seed=3)
    shown = []
    light = genaccel.generate(
        pipe, PROMPT, seed=3, decoder=f"light:{path}", preview=lambda p: shown.append(p), preview_every=3
    )
    assert light.frames.shape == full.frames.shape
    assert light.request.decoder == f"light:{path}" and light.summary()["decoder"] == f"light:{path}"
    total = light.request.num_inference_steps
    assert [p.step for p in shown] == list(range(3, total, 3))  # never at the last step: the video is next
    assert all(p.total == total for p in shown)
    latent_frames = (full.frames.shape[0] - 1) // pipe.vae_scale_factor_temporal + 1
    assert all(p.frames.shape[0] == latent_frames for p in shown)
    assert light.summary()["previews"] == len(shown) and light.summary()["preview_seconds"] >= 0


@pytest.mark.parametrize("family", ["latte", "mochi", "ltx"])
def test_families_without_a_light_decoder_refuse_it(tiny, family):
    with pytest.raises(InputError, match="has no light decoder"):
        genaccel.generate(tiny(family), PROMPT, decoder="light")


def test_a_model_without_its_own_light_decoder_needs_a_path(tiny):
    with pytest.raises(InputError, match="ships no light decoder"):
        genaccel.generate(tiny("wan"), PROMPT, decoder="light")
    with pytest.raises(InputError, match="previews need a light decoder"):
        genaccel.generate(tiny("wan"), PROMPT, preview=lambda p: None)


def test_the_clean_estimate_of_late_steps_approaches_the_video(tiny, tmp_path):
    pipe = tiny("wan")
    path = _for(pipe, tmp_path)
    shown = []
    genaccel.generate(pipe, PROMPT, seed=1, steps=12, decoder=f"light:{path}", preview=shown.append, preview_every=1)
    # the previews' distance to the last one shrinks as denoising goes on: the estimate converges
    last = shown[-1].frames
    early, late = np.abs(shown[0].frames - last).mean(), np.abs(shown[-2].frames - last).mean()
    assert late < early


# ----------------------------------------------------------------------------- bench and tune
def test_a_configuration_carries_the_decoder(tmp_path):
    assert split_configuration("balanced") == ("balanced", {})
    assert split_configuration("teacache+pab; decoder=light") == ("teacache+pab", {"decoder": "light"})
    assert split_configuration(" ; decoder=full") == ("none", {"decoder": "full"})
    for bad in ("balanced; steps=3", "balanced; decoder", "balanced; decoder=light; decoder=full"):
        with pytest.raises(InputError, match="configuration"):
            split_configuration(bad)


def test_bench_decodes_the_baseline_fully_and_a_configuration_lightly(tiny, tmp_path):
    from genaccel.tools.bench import BenchPlan, run_bench

    pipe = tiny("wan")
    path = _for(pipe, tmp_path)
    plan = BenchPlan(
        accels=[f"none; decoder=light:{path}", f"cfgcache; decoder=light:{path}"],
        prompts=[PROMPT],
        warmup=0,
        memory="off",
        request=request_from_options({"prompt": "", "decoder": f"light:{path}"}, partial=True),
    )
    rows = run_bench(pipe, plan, tmp_path / "bench", progress=False)
    decoders = {row["accel"]: row["decoder"] for row in rows}
    assert decoders["none"] == "full"  # the baseline, whatever the plan says
    assert decoders[f"none; decoder=light:{path}"] == f"light:{path}"
    light_none = next(r for r in rows if r["accel"] == f"none; decoder=light:{path}")
    assert light_none["psnr"] < 60  # the light decoder's own cost shows against the full decode


def test_the_tuner_searches_the_decoder_where_the_model_has_one(tiny):
    import optuna

    from genaccel.tools.tune import _params_of, search_space, suggest_spec

    wan = tiny("wan")
    from genaccel.pipelines.families import family_of

    family = family_of(wan)
    assert "decoder" not in search_space(family, {}, 30)
    space = search_space(family, {}, 30, light_decoder=True)
    assert "decoder" in space
    trial = optuna.trial.FixedTrial({**{g: "none" for g in space}, "decoder": "light"})
    assert suggest_spec(trial, space) == "none; decoder=light"
    trial = optuna.trial.FixedTrial(
        {**{g: "none" for g in space}, "cfg": "cfgcache", "cfgcache.interval": 3, "decoder": "light"}
    )
    spec = suggest_spec(trial, space)
    assert spec == "cfgcache(interval=3); decoder=light"
    assert (
        _params_of(spec, space)["decoder"] == "light" and _params_of("cfgcache(interval=3)", space)["decoder"] == "full"
    )


# ----------------------------------------------------------------------------- the command line
def test_generate_writes_previews_and_refuses_a_foreign_folder(tmp_path, capsys):
    from genaccel.cli import main

    pipe = genaccel.load_pipeline("tiny-wan", device="cpu")
    path = _for(pipe, tmp_path)
    out, previews = tmp_path / "clip.mp4", tmp_path / "previews"
    args = ["generate", PROMPT, "--model", "tiny-wan", "--steps", "6", "--out", str(out), "--json"]
    assert main([*args, "--decoder", f"light:{path}", "--preview-every", "2", "--preview-dir", str(previews)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["previews"] == 2 and summary["decoder"] == f"light:{path}"
    assert sorted(p.name for p in previews.iterdir()) == [".genaccel-previews", "step_0002.png", "step_0004.png"]
    # a second run may replace genaccel's previews; a folder of the user's is never written into
    assert main([*args, "--decoder", f"light:{path}", "--preview-every", "3", "--preview-dir", str(previews)]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main([*args, "--decoder", f"light:{path}", "--preview-every", "2", "--preview-dir", str(mine)]) == 2
    assert "holds files genaccel did not write" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_decoder_sweep_names_valid_configurations_at_both_settings():
    import re
    from pathlib import Path

    from genaccel.generation.spec import check_spec

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_decoder.sh").read_text()
    configs = [a or b for a, b in re.findall(r'--accel (?:"([^"]+)"|([^\s"]+))', text)]
    assert {"none; decoder=light", "balanced", "balanced; decoder=light"} <= set(configs)
    for config in configs:
        check_spec(split_configuration(config)[0])
    assert "--setting long" in text and "holdout_prompts.txt" in text and "eval_prompts.txt" not in text
