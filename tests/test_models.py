"""Model resolution and device placement: local folders load like hub checkpoints, the CUDA device
choice is checked on CPU, and the attention backend reported per family is what really runs."""

import inspect

import numpy as np
import pytest
import torch

from genaccel.errors import ModelError
from genaccel.generation.generate import generate
from genaccel.generation.load import attention_backend, load_pipeline, resolve_device
from genaccel.pipelines.families import FAMILIES, family_of
from genaccel.pipelines.tiny import TINY_FAMILIES


def test_local_folder_loads_with_from_pretrained_and_accelerates(tmp_path, tiny):
    from genaccel.models.facts import MODEL_SETTINGS_FILE
    from genaccel.models.profiles import dump_profile
    from genaccel.pipelines.tiny import TINY_CALL_DEFAULTS

    tiny("wan").save_pretrained(tmp_path / "wan")
    (tmp_path / "wan" / MODEL_SETTINGS_FILE).write_text(dump_profile(TINY_CALL_DEFAULTS["wan"]))
    pipe = load_pipeline(str(tmp_path / "wan"), device="cpu")
    assert type(pipe).__name__ == "WanPipeline"
    import genaccel

    base = generate(pipe, "a red circle", seed=0)
    genaccel.apply(pipe, "teacache(threshold=1e9,coefficients=identity)")
    fast = generate(pipe, "a red circle", seed=0)
    assert fast.stats["skipped_calls"] > 0 and fast.frames.shape == base.frames.shape
    genaccel.remove(pipe)
    np.testing.assert_array_equal(generate(pipe, "a red circle", seed=0).frames, base.frames)


def test_bad_model_names(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        load_pipeline("not a model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="unknown model 'tiny-nope'"):
        load_pipeline("tiny-nope")


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("xformers", [True, False])
def test_xformers_is_chosen_only_where_it_runs(family, device, xformers):
    adapter = FAMILIES[family]
    backend, note = attention_backend(adapter, device, xformers)
    expected = "xformers" if device == "cuda" and xformers and adapter.attention_dispatch else "sdpa"
    assert backend == expected
    assert ("PyTorch SDPA" in note) == (backend == "sdpa")
    if device == "cuda" and not adapter.attention_dispatch:
        assert adapter.title in note and "xformers is not installed" not in note


@pytest.mark.parametrize("tiny_name", TINY_FAMILIES)
def test_declared_attention_dispatch_matches_the_installed_processor(tiny, tiny_name):
    pipe = tiny(tiny_name)
    adapter = family_of(pipe)
    for _, denoiser in adapter.denoiser_modules(pipe):
        _, attention = adapter.attention_layers(denoiser, "self")[0]
        source = inspect.getsource(type(attention.processor))
        assert ("dispatch_attention_fn(" in source) == adapter.attention_dispatch, type(attention.processor).__name__
        if not adapter.attention_dispatch:
            assert "F.scaled_dot_product_attention(" in source
