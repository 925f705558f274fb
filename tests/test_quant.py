"""The quant accelerator (torchao): applied once per pipeline, removed exactly, refused in one line where it
cannot run."""

import importlib.util

import numpy as np
import pytest
import torch

from genaccel import apply, remove
from genaccel.accelerators.quant import device_refusal
from genaccel.errors import SpecError
from genaccel.generation.generate import generate

pytest.importorskip("torchao")
PROMPT = "a red circle moving left on a black background"


def _weights(module):
    return {name: (p, p.detach().clone()) for name, p in module.named_parameters()}


def test_int8_quantizes_every_linear_and_removal_restores_the_same_parameters(tiny):
    pipe = tiny("wan")
    base = generate(pipe, PROMPT, seed=0, accel="none").frames
    before = _weights(pipe.transformer)
    encoder_before = _weights(pipe.text_encoder)
    linears = sum(isinstance(m, torch.nn.Linear) for m in pipe.transformer.modules())

    apply(pipe, "quant(weights=int8,activations=int8)")
    quantized = generate(pipe, PROMPT, seed=0)
    assert quantized.stats["accelerators"]["quant"]["linear_layers"] == linears
    layers = [m for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert all(type(m.weight) is not torch.nn.Parameter for m in layers)  # torchao's quantized tensors
    assert all(p is encoder_before[n][0] for n, p in pipe.text_encoder.named_parameters())  # not asked for
    assert np.isfinite(quantized.frames).all() and not np.array_equal(quantized.frames, base)

    remove(pipe)
    for name, p in pipe.transformer.named_parameters():
        original, values = before[name]
        assert p is original and torch.equal(p, values), name
    assert all("extra_repr" not in m.__dict__ for m in layers)
    np.testing.assert_array_equal(generate(pipe, PROMPT, seed=0, accel="none").frames, base)


def test_text_encoder_only(tiny):
    pipe = tiny("wan")
    encoder = {n: p for n, p in pipe.text_encoder.named_parameters()}
    transformer = {n: p for n, p in pipe.transformer.named_parameters()}
    apply(pipe, "quant(weights=int8,activations=none,modules=text_encoder)")
    assert all(p is transformer[n] for n, p in pipe.transformer.named_parameters())
    assert any(type(p) is not torch.nn.Parameter for p in pipe.text_encoder.parameters())
    remove(pipe)
    assert all(p is encoder[n] for n, p in pipe.text_encoder.named_parameters())


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("quant(weights=fp8,activations=fp8)", "fp8 needs a CUDA GPU"),
        ("quant(weights=int4,activations=none)", "int4 weights need a CUDA GPU"),
        ("quant(weights=int8,activations=fp8)", "not a torchao configuration"),
        ("quant(weights=int2)", "weights must be one of"),
        ("quant(modules=vae)", "modules must be one of"),
    ],
)
def test_refusals_are_one_line_and_leave_the_pipeline_untouched(tiny, spec, words):
    pipe = tiny("wan")
    before = {n: p for n, p in pipe.transformer.named_parameters()}
    with pytest.raises(SpecError, match=words) as error:
        apply(pipe, spec)
    assert "\n" not in str(error.value)
    assert all(p is before[n] for n, p in pipe.transformer.named_parameters())


def test_fp8_refused_on_old_gpus():
    class Device:
        type = "cuda"

    real = torch.cuda.get_device_capability
    torch.cuda.get_device_capability = lambda device=None: (8, 0)
    try:
        assert "8.9 or newer; this GPU has 8.0" in device_refusal("fp8", "none", Device())
    finally:
        torch.cuda.get_device_capability = real


def test_missing_torchao_is_one_line(tiny, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(SpecError, match=r"needs torchao, not installed: pip install 'genaccel\[quant\]'"):
        apply(tiny("wan"), "quant")


def test_sequential_offloading_is_refused_before_any_work(tiny):
    with pytest.raises(SpecError, match="--offload sequential") as error:
        generate(tiny("wan"), PROMPT, accel="quant", offload="sequential")
    assert "\n" not in str(error.value)
