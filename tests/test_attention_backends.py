"""Attention backends through diffusers' dispatch: a request field, set on the denoisers and taken off again,
honoured by the seam's dense path, refused in one line where it cannot run."""

import numpy as np
import pytest

from genaccel import remove
from genaccel.attention.backends import BACKENDS, unusable_reason, usable_backends
from genaccel.errors import InputError
from genaccel.generation.generate import generate

PROMPT = "a red circle moving left on a black background"


def _backends(pipe):
    return {
        getattr(m.processor, "_attention_backend", None) for m in pipe.transformer.modules() if hasattr(m, "processor")
    }


def test_native_and_flex_run_on_cpu():
    assert {"native", "flex"} <= set(usable_backends("cpu"))
    assert "needs a CUDA GPU" in unusable_reason("xformers", "cpu") or "not installed" in unusable_reason(
        "xformers", "cpu"
    )


def test_flex_backend_matches_native_and_is_removed(tiny):
    pipe = tiny("wan")
    native = generate(pipe, PROMPT, seed=0, accel="none").frames
    flex = generate(pipe, PROMPT, seed=0, accel="none", attention="flex")
    assert _backends(pipe) - {None} == {"flex"}
    assert repr(pipe._genaccel).endswith("attention=flex)")
    np.testing.assert_allclose(flex.frames, native, atol=2e-3)
    generate(pipe, PROMPT, seed=0, accel="none")  # the default again: the backend comes off
    assert _backends(pipe) <= {None}
    remove(pipe)


def test_seam_dense_path_uses_the_backend(tiny):
    """Token merging (a kernel owner around attention) computes its dense attention through the backend."""
    pipe = tiny("wan")
    spec = "tome(ratio=0.4,cell=1:1:2,dense_steps=0,min_tokens=0)"
    native = generate(pipe, PROMPT, seed=0, accel=spec).frames
    flex = generate(pipe, PROMPT, seed=0, accel=spec, attention="flex").frames
    np.testing.assert_allclose(flex, native, atol=2e-3)
    remove(pipe)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("native", "flex")])
def test_unusable_backend_is_one_line(tiny, backend):
    with pytest.raises(InputError, match=f"--attention {backend}: ") as error:
        generate(tiny("wan"), PROMPT, accel="none", attention=backend)
    assert "\n" not in str(error.value)


def test_family_without_dispatch_is_refused(tiny):
    with pytest.raises(InputError, match="does not go through diffusers' attention dispatch"):
        generate(tiny("cogvideox"), PROMPT, accel="none", attention="flex")


def test_unknown_backend_is_refused_by_the_request():
    from genaccel.generation.request import request_from_options

    with pytest.raises(InputError, match="attention"):
        request_from_options({"prompt": "x", "attention": "turbo"})


def test_list_shows_what_runs_here():
    from genaccel.tools.catalog import catalog, format_catalog

    data = catalog()
    assert data["attention_backends"]["native"] == "yes" and data["attention_backends"]["flex"] == "yes"
    text = format_catalog(data)
    assert "Attention backends (--attention" in text and "quant (torchao): usable" in text
    assert "  compile " in text and "  quant " in text
