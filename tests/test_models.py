"""Model resolution and device placement: local folders load like hub checkpoints, and the CUDA
paths (device choice, xformers through diffusers' attention dispatch) are checked on CPU."""

import sys
import types

import numpy as np
import pytest
import torch

from genaccel.errors import ModelError
from genaccel.generate import generate
from genaccel.models import load_pipeline, resolve_device, select_attention_backend
from genaccel.pipelines.families import FAMILIES


def test_local_folder_loads_with_from_pretrained_and_accelerates(tmp_path, tiny):
    from genaccel.models import MODEL_SETTINGS_FILE
    from genaccel.pipelines.tiny import TINY_CALL_DEFAULTS
    from genaccel.profiles import dump_profile

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


def test_xformers_is_selected_only_on_cuda_when_installed(tiny, monkeypatch):
    pipe = tiny("wan")
    chosen = []
    monkeypatch.setattr(pipe.transformer, "set_attention_backend", chosen.append, raising=False)
    family = FAMILIES["wan"]
    assert select_attention_backend(pipe, torch.device("cpu"), family) == "native" and chosen == []
    monkeypatch.setitem(sys.modules, "xformers", None)  # not installed
    assert select_attention_backend(pipe, torch.device("cuda"), family) == "native" and chosen == []
    monkeypatch.setitem(sys.modules, "xformers", types.ModuleType("xformers"))
    assert select_attention_backend(pipe, torch.device("cuda"), family) == "xformers"
    assert chosen == ["xformers"]
