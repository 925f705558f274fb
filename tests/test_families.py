"""Family adapters recognise pipelines and state their facts as data, checked against diffusers."""

import pytest

from genaccel.errors import InputError, ModelError
from genaccel.pipelines.families import FAMILIES, family_of
from genaccel.pipelines.tiny import tiny_call_kwargs

EXPECTED = {
    "wan": "wan",
    "wan22": "wan",
    "cogvideox": "cogvideox",
    "hunyuanvideo": "hunyuanvideo",
    "ltx": "ltx",
    "latte": "latte",
    "mochi": "mochi",
}


@pytest.mark.parametrize("tiny_name, family", sorted(EXPECTED.items()))
def test_recognised_with_blocks_and_attention(tiny, tiny_name, family):
    pipe = tiny(tiny_name)
    adapter = family_of(pipe)
    assert adapter.name == family
    for _, denoiser in adapter.denoiser_modules(pipe):
        blocks = adapter.blocks(denoiser)
        assert len(blocks) >= 3
        run = adapter.pass_blocks(denoiser)
        assert run[0] is adapter.block_at(denoiser, adapter.pass_head) and run[-1] is adapter.block_at(
            denoiser, adapter.pass_tail
        )
        assert adapter.attention_layers(denoiser)
    assert len(adapter.denoiser_modules(pipe)) == (2 if tiny_name == "wan22" else 1)


@pytest.mark.parametrize("tiny_name", sorted(EXPECTED))
def test_declared_cfg_layout_and_block_order_match_a_real_step(tiny, tiny_name):
    """Two denoising steps: the transformer calls show the CFG mode, the latent layout and the block order."""
    pipe = tiny(tiny_name)
    adapter = family_of(pipe)
    calls, order, handles = [], [], []
    for _, denoiser in adapter.denoiser_modules(pipe):

        def record(module, args, kwargs):
            calls.append((module, kwargs.get("hidden_states", args[0] if args else None).shape))

        handles.append(denoiser.register_forward_pre_hook(record, with_kwargs=True))
        for _, block in adapter.blocks(denoiser):
            handles.append(block.register_forward_pre_hook(lambda module, args: order.append(module)))
    try:
        pipe(**tiny_call_kwargs(tiny_name, num_inference_steps=2))  # Mochi's schedule needs 2
    finally:
        for handle in handles:
            handle.remove()

    denoiser = calls[0][0]
    shapes = [shape for _, shape in calls]
    assert [s[0] for s in shapes] == ([1] * 4 if adapter.cfg == "separate" else [2] * 2)
    channels = denoiser.config.in_channels
    layout = {"BCFHW": (5, 1), "BFCHW": (5, 2), "BSC": (3, 2)}[adapter.tensor_format]
    assert (len(shapes[0]), shapes[0][layout[1]]) == (layout[0], channels)
    per_pass = adapter.execution_order(denoiser)
    assert order[: len(per_pass)] == per_pass


def test_unknown_pipeline_is_refused():
    class NotAVideoPipeline:
        pass

    with pytest.raises(ModelError, match="not a supported video pipeline"):
        family_of(NotAVideoPipeline())


@pytest.mark.parametrize(
    "family, good, bad",
    [
        ("wan", [1, 5, 81], [2, 8, 80]),
        ("ltx", [9, 161], [5, 8]),
        ("mochi", [7, 19], [8, 9]),
        ("cogvideox", [9, 49], [5, 13]),
    ],
)
def test_frame_rules(family, good, bad):
    adapter = FAMILIES[family]
    for frames in good:
        adapter.check_frames(frames)
    for frames in bad:
        with pytest.raises(InputError):
            adapter.check_frames(frames)


def test_size_rules():
    FAMILIES["ltx"].check_size(480, 704)
    with pytest.raises(InputError, match="multiple of 32"):
        FAMILIES["ltx"].check_size(480, 700)
