"""Sparse attention accelerators on pipelines: kernels nest by slot whatever the spec's order, the seam goes
on and off exactly, dense warm-up layers and steps hold, figures are per generation."""

from dataclasses import dataclass

import numpy as np
import pytest

from genaccel import Acceleration, apply, remove
from genaccel.accelerators import ACCELERATORS
from genaccel.accelerators.base import SLOT_KV_CACHE, SLOT_TOKENS, Accelerator, AcceleratorConfig
from genaccel.attention import SparseAttentionKernel
from genaccel.errors import SpecError
from genaccel.generation.generate import generate
from genaccel.generation.spec import ResolvedSpec, resolve_spec
from genaccel.pipelines.families import family_of

PROMPT = "a red circle moving left on a black background"
SPARSE = "sta(density=0.3,tile=1:1:2,dense_steps=2,dense_layers=1,max_density=1,block=2)"


@dataclass
class _Config(AcceleratorConfig):
    pass


def _wrapper(slot_name, slot):
    class Wrapper(Accelerator):
        name = slot_name
        summary = "test wrapper"
        config_class = _Config
        slots = frozenset({slot})

        def apply(self, denoiser):
            pass

        def attention_kernel(self, inner):
            def kernel(q, k, v, context):
                return inner(q, k, v, context)

            kernel.inner = inner
            kernel.owner = self.name
            return kernel

    return Wrapper


def test_kernels_nest_by_slot_not_by_spec_order(tiny):
    pipe = tiny("wan")
    family = family_of(pipe)
    sparse = resolve_spec(SPARSE, family, None).accelerators[0]
    tokens, cache = _wrapper("tokens", SLOT_TOKENS), _wrapper("kvcache", SLOT_KV_CACHE)
    for order in ([(cache, _Config()), sparse, (tokens, _Config())], [sparse, (tokens, _Config()), (cache, _Config())]):
        acceleration = Acceleration(pipe, family, ResolvedSpec("test", tuple(order)), {})
        try:
            processor = pipe.transformer.blocks[0].attn1.processor
            outer = processor.kernel
            assert outer.owner == "kvcache" and outer.inner.owner == "tokens"
            assert isinstance(outer.inner.inner, SparseAttentionKernel)
        finally:
            acceleration.remove()


def test_seam_goes_on_and_off_exactly(tiny):
    pipe = tiny("cogvideox")
    processors = {name: m.processor for name, m in pipe.transformer.named_modules() if hasattr(m, "processor")}
    apply(pipe, SPARSE)
    swapped = [
        name
        for name, m in pipe.transformer.named_modules()
        if hasattr(m, "processor") and m.processor is not processors[name]
    ]
    assert swapped and all(name.endswith("attn1") for name in swapped)  # self-attention only
    remove(pipe)
    for name, m in pipe.transformer.named_modules():
        if hasattr(m, "processor"):
            assert m.processor is processors[name]
    registries = [m._diffusers_hook for m in pipe.transformer.modules() if getattr(m, "_diffusers_hook", None)]
    assert all(not r.hooks for r in registries)


@pytest.mark.parametrize("family", ["wan", "hunyuanvideo", "mochi"])
def test_dense_warmup_and_figures_per_generation(tiny, family):
    pipe = tiny(family)
    apply(pipe, SPARSE)
    first = generate(pipe, PROMPT, seed=0, num_inference_steps=4)
    figures = first.stats["accelerators"]["sta"]
    assert figures["by_step"][0] == figures["by_step"][1] == 1.0  # dense_steps=2
    assert figures["by_step"][2] < 1.0 and figures["by_step"][3] < 1.0
    assert figures["by_layer"][0] == 1.0 and figures["by_layer"][1] < 1.0  # dense_layers=1
    assert figures["calls"]["dense_masked"] == 0  # HunyuanVideo's text padding mask is honoured sparsely
    assert figures["path"] in ("compiled", "eager")
    second = generate(pipe, PROMPT, seed=0, num_inference_steps=4)
    assert second.stats["accelerators"]["sta"] == figures  # figures restart with each generation
    np.testing.assert_array_equal(second.frames, first.frames)
    remove(pipe)


def test_sparse_methods_refuse_latte_with_the_reason(tiny):
    pipe = tiny("latte")
    for name in ("svg", "radial", "sta", "topk"):
        with pytest.raises(SpecError, match="factorised"):
            apply(pipe, name)
        assert not any(
            getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in pipe.transformer.modules()
        )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("radial(density=0)", "density must be in"),
        ("sta(tile=2:8)", "3 numbers joined by ':'"),
        ("svg(block=24)", "power of two"),
        ("topk(threshold=1.5)", "threshold must be in"),
        ("svg+topk", "cannot stack"),
    ],
)
def test_bad_sparse_specs_are_refused(tiny, spec, message):
    pipe = tiny("wan")
    with pytest.raises(SpecError, match=message):
        apply(pipe, spec)


def test_every_sparse_method_is_registered():
    assert {"svg", "radial", "sta", "topk"} <= set(ACCELERATORS)


def test_plans_denser_than_max_density_run_dense(tiny):
    """Where flex attention would not beat dense SDPA the call runs dense: exact, counted as dense."""
    pipe = tiny("wan")
    plain = generate(pipe, PROMPT, seed=0, num_inference_steps=3)
    apply(pipe, SPARSE.replace("max_density=1", "max_density=0.1"))
    result = generate(pipe, PROMPT, seed=0, num_inference_steps=3)
    figures = result.stats["accelerators"]["sta"]
    assert figures["sparse_density"] is None and figures["density"] == 1.0
    np.testing.assert_array_equal(result.frames, plain.frames)
    remove(pipe)
