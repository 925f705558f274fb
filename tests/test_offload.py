"""Offloading and VAE tiling through diffusers, stacked with every accelerator; the memory estimate
and the refusal that names the option that would fit."""

import json

import numpy as np
import pytest

import genaccel
from genaccel.accelerators import ACCELERATORS
from genaccel.cli import main
from genaccel.errors import InputError, MemoryFitError, SpecError
from genaccel.generation.prepare import estimate_memory, prepare
from genaccel.generation.spec import resolve_spec
from genaccel.memory.estimate import REMEDIES, ModelSizes, estimate_peak, fit_message
from genaccel.memory.offload import placement
from genaccel.pipelines.families import family_of

PROMPT = "a red circle moving left on a black background"


def _frames(pipe, accel, **options):
    return genaccel.generate(pipe, PROMPT, accel=accel, seed=3, **options).frames


def _supported(pipe) -> list[str]:
    names = []
    for name in ACCELERATORS:
        try:
            genaccel.apply(pipe, name)
        except SpecError:
            continue  # not on this family, or needs a calibrated profile
        names.append(name)
    genaccel.remove(pipe)
    return names


@pytest.mark.parametrize("mode", ["model", "group", "sequential"])
def test_every_accelerator_runs_the_same_under_offloading(tiny, mode):
    pipe = tiny("wan")
    # quant refuses sequential offloading (tests/test_quant.py)
    accels = [a for a in _supported(pipe) if a != "kvcache" and (a, mode) != ("quant", "sequential")] + ["balanced"]
    assert len(accels) >= 8
    for accel in accels:
        expected = _frames(pipe, accel, offload="none")
        got = _frames(pipe, accel, offload=mode)
        assert placement(pipe) == (mode, False)
        if accel == "compile":  # offloading's hooks set other graph boundaries: the same math, fused differently
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{accel} under --offload {mode}")
        else:
            assert np.array_equal(got, expected), f"{accel} under --offload {mode}"


def test_switching_accelerators_under_offloading_keeps_both_working(tiny):
    pipe = tiny("cogvideox")
    plain = {accel: _frames(pipe, accel) for accel in ("pab", "teacache", "none")}
    for mode in ("model", "group"):
        for accel in ("pab", "teacache", "none"):  # each switch re-applies genaccel's hooks under the offloading
            result = genaccel.generate(pipe, PROMPT, accel=accel, seed=3, offload=mode)
            assert np.array_equal(result.frames, plain[accel]), (mode, accel)
            if accel == "teacache":
                assert result.stats["skipped_calls"] > 0  # the accelerator really ran, under the offload hooks
    genaccel.remove(pipe)
    assert placement(pipe) == ("group", False)


def test_vae_tiling_is_switched_per_request_and_kept_otherwise(tiny):
    pipe = tiny("wan")
    plain = _frames(pipe, "none")
    assert np.array_equal(_frames(pipe, "none", vae_tiling=True), plain)  # frames smaller than one tile
    assert pipe.vae.use_tiling and placement(pipe) == ("none", True)
    _frames(pipe, "none")  # unset: kept
    assert pipe.vae.use_tiling
    _frames(pipe, "none", vae_tiling=False)
    assert not pipe.vae.use_tiling


def test_load_pipeline_places_with_an_offload_mode():
    pipe = genaccel.load_pipeline("tiny-ltx", device="cpu", offload="model")
    assert placement(pipe) == ("model", False)
    unplaced = genaccel.load_pipeline("tiny-ltx", device="cpu", offload=None)
    assert placement(unplaced) is None
    expected = _frames(unplaced, "none")
    assert placement(unplaced) == ("none", False)  # the first generation placed it
    assert np.array_equal(_frames(pipe, "none"), expected)


def test_request_memory_options_are_checked():
    from genaccel.generation.request import parse_size, request_from_options

    assert request_from_options({"prompt": "x", "offload": "Group"}).offload == "group"
    assert request_from_options({"prompt": "x", "vae-tiling": "on"}).vae_tiling is True
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("512 MiB") == 512 * 2**20
    for options, message in [
        ({"offload": "disk"}, "offload must be one of none, model, group, sequential"),
        ({"vae_tiling": "maybe"}, "vae-tiling must be true or false"),
        ({"max_memory": "lots"}, "max-memory must be a size such as 24GB"),
        ({"max_memory": "-1GB"}, "max-memory must be a size"),
    ]:
        with pytest.raises(InputError, match=message):
            request_from_options({"prompt": "x", **options})


# ----------------------------------------------------------------------------- the estimate
def test_estimate_grows_with_the_request_and_the_accelerators_state(tiny):
    pipe = tiny("wan")
    sizes = ModelSizes.of(pipe)
    small = estimate_peak(sizes, num_frames=9, height=32, width=32, guidance_scale=5)
    large = estimate_peak(sizes, num_frames=33, height=64, width=64, guidance_scale=5)
    assert large.activations > 3 * small.activations and large.decode > 3 * small.decode
    weights = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    assert small.phases["denoise"] >= weights
    family = family_of(pipe)
    spec = resolve_spec("pab+cfgcache", family)
    cached = estimate_peak(sizes, num_frames=33, height=64, width=64, guidance_scale=5, accelerators=spec.accelerators)
    assert cached.state > 0 and cached.phases["denoise"] == large.phases["denoise"] + cached.state


def test_offloading_lowers_the_estimate_on_an_accelerator_only(tiny):
    sizes = ModelSizes.of(tiny("wan"))
    shape = dict(num_frames=9, height=32, width=32, guidance_scale=5)
    on_gpu = {
        mode: estimate_peak(sizes, offload=mode, device="cuda", **shape).peak
        for mode in ("none", "model", "group", "sequential")
    }
    assert on_gpu["none"] > on_gpu["model"] > on_gpu["group"] >= on_gpu["sequential"]
    on_cpu = {estimate_peak(sizes, offload=mode, device="cpu", **shape).peak for mode in on_gpu}
    assert len(on_cpu) == 1  # the CPU holds the weights either way


def test_a_run_that_does_not_fit_names_the_option_that_would(tiny):
    """The small-GPU case: weights resident do not fit, one offload mode does; genaccel says which."""
    sizes = ModelSizes.of(tiny("wan"))
    shape = dict(num_frames=9, height=32, width=32, guidance_scale=5, device="cuda")
    plain = estimate_peak(sizes, **shape)
    alternatives = {flag: estimate_peak(sizes, **shape, **fields) for flag, fields in REMEDIES}
    group = alternatives["--offload group"].peak
    budget = (group + alternatives["--offload model"].peak) // 2  # model does not fit, group does
    assert group < budget < plain.peak
    message = fit_message(plain, budget, alternatives)
    assert "--offload group brings it to about" in message and "more than the" in message
    assert "\n" not in message
    assert "make fewer or smaller frames" in fit_message(plain, 1, alternatives)


def test_prepare_refuses_a_run_over_max_memory_before_it_starts(tiny):
    pipe = tiny("wan")
    request = genaccel.GenerationRequest(prompt=PROMPT, max_memory="1MB")
    with pytest.raises(MemoryFitError, match="more than the 1.0 MB it may use"):
        prepare(pipe, request)
    assert prepare(pipe, genaccel.GenerationRequest(prompt=PROMPT, max_memory="1GB")).memory.peak < 1e9
    unchecked = prepare(pipe, request, check_fit=False)
    assert unchecked.memory.peak > 1e6
    assert estimate_memory(pipe, unchecked.request).peak == unchecked.memory.peak
    assert estimate_memory(pipe, request) is None  # sizes left to the pipeline: nothing to estimate


def test_cli_dry_run_prints_the_estimate_and_makes_nothing(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", PROMPT, "--model", "tiny-wan", "--dry-run", "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["fits"] is True and report["peak_bytes"] > report["weights_bytes"] > 0
    assert not out.exists()
    assert main(["generate", PROMPT, "--model", "tiny-wan", "--dry-run", "--max-memory", "100kB"]) == 0
    assert "more than the 0.1 MB it may use" in capsys.readouterr().out


def test_cli_generate_over_max_memory_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(["generate", PROMPT, "--model", "tiny-wan", "--max-memory", "100kB", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("genaccel: error: this run needs about") and "\n" not in err
    assert not out.exists()
    assert (
        main(["generate", PROMPT, "--model", "tiny-wan", "--offload", "group", "--vae-tiling", "--out", str(out)]) == 0
        and out.is_file()
    )


def test_wan_14b_on_a_24gb_card_is_told_to_offload_by_group():
    """The published Wan2.1-T2V-14B configuration, built on the meta device (no weights): 480p, 81 frames
    does not fit 24 GB as it is or with model offloading; genaccel names group offloading."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=40,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=13824,
            num_layers=40,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ).to(torch.bfloat16)
        vae = AutoencoderKLWan(
            base_dim=96,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        )
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=256384,
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=24,
                num_heads=64,
                feed_forward_proj="gated-gelu",
            )
        ).to(torch.bfloat16)
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    sizes = ModelSizes.of(pipe)
    assert 13.5e9 < sizes.components["transformer"].total / 2 < 14.5e9  # 14B parameters in bf16
    shape = dict(num_frames=81, height=480, width=832, guidance_scale=5.0, device="cuda")
    alternatives = {flag: estimate_peak(sizes, **shape, **fields) for flag, fields in REMEDIES}
    message = fit_message(estimate_peak(sizes, **shape), 24 * 10**9, alternatives)
    assert alternatives["--offload model"].peak > 24e9 > alternatives["--offload group"].peak
    assert message.endswith(f"--offload group brings it to about {alternatives['--offload group'].peak / 1e9:.2f} GB")


def test_the_estimate_is_within_a_quarter_of_the_measured_tensor_peak(embedded):
    """The embedded model at a size other than the one the decoder's working set was read off (64x64x17)."""
    from genaccel.tools.bench.memory import TensorPeakMemory

    request = genaccel.GenerationRequest(
        prompt=PROMPT, height=96, width=96, num_frames=21, num_inference_steps=1, accel="none"
    )
    prepared = prepare(embedded, request)
    weights = sum(
        t.numel() * t.element_size()
        for name in ("transformer", "vae", "text_encoder")
        for module in [getattr(embedded, name)]
        for t in (*module.parameters(), *module.buffers())
    )
    with TensorPeakMemory() as measured:
        genaccel.generate(embedded, prepared)
    assert abs(prepared.memory.peak / (measured.peak_bytes + weights) - 1) < 0.25


def test_tensor_peak_memory_counts_what_is_alive_at_once():
    import torch

    from genaccel.tools.bench.memory import TensorPeakMemory

    with TensorPeakMemory() as measured:
        a = torch.ones(1_000_000)  # 4 MB
        b = a * 2  # 4 MB more while a lives
        del a, b
        c = torch.zeros(250_000)  # 1 MB, after both were freed
    assert measured.peak_bytes == 8_000_000
    assert c.numel() == 250_000
