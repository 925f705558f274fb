"""Family adapters recognise pipelines and state their constraints as data."""

import pytest

from genaccel.errors import InputError, ModelError
from genaccel.pipelines.families import FAMILIES, family_of

EXPECTED = {"wan": "wan", "wan22": "wan", "cogvideox": "cogvideox", "hunyuanvideo": "hunyuanvideo",
            "ltx": "ltx", "latte": "latte", "mochi": "mochi"}


@pytest.mark.parametrize("tiny_name, family", sorted(EXPECTED.items()))
def test_recognised_with_blocks_and_attention(tiny, tiny_name, family):
    pipe = tiny(tiny_name)
    adapter = family_of(pipe)
    assert adapter.name == family
    for _, denoiser in adapter.denoiser_modules(pipe):
        blocks = adapter.blocks(denoiser)
        assert len(blocks) >= 3
        run = adapter.pass_blocks(denoiser)
        assert run[0] is adapter.block_at(denoiser, adapter.pass_head) and run[-1] is adapter.block_at(denoiser, adapter.pass_tail)
        assert adapter.attention_layers(denoiser)
        assert adapter.timestep_embedding and hasattr(denoiser, adapter.timestep_embedding.split(".")[0])
    assert len(adapter.denoiser_modules(pipe)) == (2 if tiny_name == "wan22" else 1)


def test_unknown_pipeline_is_refused():
    class NotAVideoPipeline:
        pass

    with pytest.raises(ModelError, match="not a supported video pipeline"):
        family_of(NotAVideoPipeline())


@pytest.mark.parametrize("family, good, bad", [("wan", [1, 5, 81], [2, 8, 80]), ("ltx", [9, 161], [5, 8]),
                                                ("mochi", [7, 19], [8, 9]), ("cogvideox", [9, 49], [5, 13])])
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
