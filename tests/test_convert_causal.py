"""Converting causal Wan checkpoints (Self-Forcing / CausVid / LongLive layout) to a streaming model folder."""

import numpy as np
import pytest
import torch

from genaccel.errors import InputError
from genaccel.tools.convert_causal import convert_causal_checkpoint, infer_config, rename_state_dict

WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
)


def original_wan_shapes(dim, ffn, layers, text_dim, freq_dim, channels=16, patch=(1, 2, 2)):
    """Tensor names and shapes of the original Wan 2.1 model (wan/modules/model.py), which the causal models keep."""
    shapes = {
        "patch_embedding.weight": (dim, channels, *patch),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.modulation": (1, 2, dim),
        "head.head.weight": (channels * patch[0] * patch[1] * patch[2], dim),
        "head.head.bias": (channels * patch[0] * patch[1] * patch[2],),
    }
    for i in range(layers):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                shapes[f"{b}{attn}.{p}.weight"], shapes[f"{b}{attn}.{p}.bias"] = (dim, dim), (dim,)
            shapes[f"{b}{attn}.norm_q.weight"] = shapes[f"{b}{attn}.norm_k.weight"] = (dim,)
        shapes[b + "norm3.weight"] = shapes[b + "norm3.bias"] = (dim,)
        shapes[b + "ffn.0.weight"], shapes[b + "ffn.0.bias"] = (ffn, dim), (ffn,)
        shapes[b + "ffn.2.weight"], shapes[b + "ffn.2.bias"] = (dim, ffn), (dim,)
    return shapes


def test_real_wan_1_3b_names_and_shapes_map_onto_diffusers():
    from diffusers import WanTransformer3DModel

    shapes = original_wan_shapes(1536, 8960, 30, 4096, 256)
    state = {f"model.{k}": torch.empty(s, device="meta") for k, s in shapes.items()}  # as Self-Forcing saves it
    converted = rename_state_dict(state)
    config = infer_config(converted)
    assert {k: config[k] for k in WAN_1_3B} == WAN_1_3B
    with torch.device("meta"):
        target = WanTransformer3DModel(**config).state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)


def _tiny_checkpoint(tmp_path, suffix=".pt"):
    shapes = original_wan_shapes(24, 32, 3, 32, 32)  # the tiny Wan text encoder is 32 wide
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    path = tmp_path / f"causal{suffix}"
    if suffix == ".pt":
        torch.save({"generator_ema": {f"model.{k}": v for k, v in state.items()}, "step": 600}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_converted_folder_loads_and_streams(tiny, tmp_path, suffix):
    from genaccel.generation.load import load_pipeline
    from genaccel.generation.stream import stream

    base = tmp_path / "base"
    tiny("wan").save_pretrained(base)
    checkpoint, state = _tiny_checkpoint(tmp_path, suffix)
    out = convert_causal_checkpoint(
        checkpoint, base, tmp_path / "causal", chunk_frames=1, window=2, sink=1, head_dim=12, dtype=torch.float32
    )
    pipe = load_pipeline(str(out))
    torch.testing.assert_close(pipe.transformer.blocks[1].norm2.weight, state["blocks.1.norm3.weight"])
    torch.testing.assert_close(pipe.transformer.blocks[2].attn1.to_out[0].weight, state["blocks.2.self_attn.o.weight"])
    assert pipe._genaccel_stream["timesteps"] == [1000, 750, 500, 250]
    chunks = list(stream(pipe, "a red circle moving left on a black background", chunks=3, height=32, width=32))
    assert [len(c.frames) for c in chunks] == [1, 4, 4] and all(np.isfinite(c.frames).all() for c in chunks)
    assert chunks[-1].cached_frames == [0, 1, 2]
    assert not list(tmp_path.glob(".causal.converting"))


def test_converter_refuses_bad_input(tiny, tmp_path):
    base = tmp_path / "base"
    tiny("wan").save_pretrained(base)
    checkpoint, state = _tiny_checkpoint(tmp_path, ".safetensors")
    with pytest.raises(InputError, match="not a diffusers Wan pipeline folder"):
        convert_causal_checkpoint(checkpoint, tmp_path, tmp_path / "x")
    with pytest.raises(InputError, match="no checkpoint file"):
        convert_causal_checkpoint(tmp_path / "missing.pt", base, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        convert_causal_checkpoint(checkpoint, base, tmp_path / "full", head_dim=12)
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep"
    with pytest.raises(InputError, match="unknown tensor name"):
        rename_state_dict({"blocks.0.lora_A.weight": torch.zeros(1)})
    evil = tmp_path / "evil.pt"
    torch.save({"generator": {"x": torch.zeros(1)}, "obj": np.dtype("float32").type}, evil)
    with pytest.raises(InputError, match="weights-only loader"):
        convert_causal_checkpoint(evil, base, tmp_path / "y")
    assert not (tmp_path / "y").exists() and not (tmp_path / "x").exists()
