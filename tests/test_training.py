"""Training code that ships with the embedded model: the block-causal variant really is causal,
and the schedules stay in range."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "train_transformer", Path(__file__).parents[1] / "training" / "train_transformer.py"
)
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)

CFG = {
    "seed": 0,
    "model": {
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "num_layers": 2,
        "ffn_dim": 32,
        "freq_dim": 16,
        "attention": "block_causal",
        "chunk_frames": 1,
    },
    "train": {"lr": 1e-3, "warmup": 10, "steps": 100},
}


def _outputs(transformer, latents, text):
    with torch.no_grad():
        return transformer(latents, torch.tensor([500.0]), text, return_dict=False)[0]


def test_block_causal_frames_do_not_see_later_chunks():
    transformer = train.build_transformer(CFG, text_dim=16).eval()
    latents = torch.randn(1, 16, 3, 4, 4)
    text = torch.randn(1, 4, 16)
    later_changed = latents.clone()
    later_changed[:, :, 2] += 1.0

    full_a, full_b = _outputs(transformer, latents, text), _outputs(transformer, later_changed, text)
    assert not torch.allclose(full_a[:, :, 0], full_b[:, :, 0]), "full attention: frame 0 sees frame 2"

    for mask in train.install_block_causal(transformer, chunk_frames=1):
        mask.latent_frames = 3
    causal_a, causal_b = _outputs(transformer, latents, text), _outputs(transformer, later_changed, text)
    torch.testing.assert_close(causal_a[:, :, :2], causal_b[:, :, :2])  # frames 0 and 1 unaffected
    assert not torch.allclose(causal_a[:, :, 2], causal_b[:, :, 2])


def test_sigma_and_learning_rate_schedules():
    sigmas = train.sample_sigmas(4096, 0.8, torch.Generator().manual_seed(0))
    assert 0 < sigmas.min() and sigmas.max() < 1
    assert 0.4 < sigmas.mean() < 0.6
    lrs = [train.lr_at(s, CFG) for s in range(100)]
    assert lrs[0] < lrs[9] == max(lrs) and lrs[-1] < lrs[50] < lrs[10]


_causal_spec = importlib.util.spec_from_file_location(
    "train_causal", Path(__file__).parents[1] / "training" / "train_causal.py"
)
causal = importlib.util.module_from_spec(_causal_spec)
_causal_spec.loader.exec_module(causal)


def test_teacher_forcing_mask_is_the_streaming_pattern():
    """[context | noisy] with 3 frames of 2 tokens: a context frame sees context up to itself, a noisy frame the
    context of earlier frames and its own noisy frame, as a chunk sees the KV cache and itself."""
    mask = causal.teacher_forcing_mask(3, 2, 1)
    assert mask.shape == (12, 12)
    frame = lambda half, f: slice(half * 6 + 2 * f, half * 6 + 2 * f + 2)  # noqa: E731
    assert mask[frame(0, 1), frame(0, 0)].all() and mask[frame(0, 1), frame(0, 1)].all()
    assert not mask[frame(0, 1), frame(0, 2)].any() and not mask[frame(0, 2), 6:].any()
    assert mask[frame(1, 2), frame(0, 0)].all() and mask[frame(1, 2), frame(0, 1)].all()
    assert not mask[frame(1, 2), frame(0, 2)].any()  # its own clean copy is not context
    assert mask[frame(1, 2), frame(1, 2)].all() and not mask[frame(1, 2), frame(1, 1)].any()


def test_sink_gap_frames_and_shared_positions():
    assert causal.pick_frames(9, 0).tolist() == list(range(9))
    assert causal.pick_frames(9, 3).tolist() == [0, 4, 5, 6, 7, 8]
    transformer = train.build_transformer(CFG, text_dim=16)
    rope = causal.SharedPositionsRope(transformer.rope)
    rope.doubled = True
    cos, sin = rope(torch.zeros(1, 16, 6, 4, 4))  # 3 context + 3 noisy frames of 2x2 tokens
    torch.testing.assert_close(cos[:, :12], cos[:, 12:])
    torch.testing.assert_close(sin[:, :12], sin[:, 12:])
    rope.doubled = False
    assert rope(torch.zeros(1, 16, 6, 4, 4))[0].shape[1] == 24


def test_update_steps_the_model_and_moves_the_ema():
    transformer = train.build_transformer(CFG, text_dim=16)
    ema = train.build_transformer(CFG, text_dim=16).requires_grad_(False)
    before = [p.detach().clone() for p in transformer.parameters()]
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-3)
    out = transformer(torch.randn(1, 16, 2, 4, 4), torch.tensor([500.0]), torch.randn(1, 4, 16), return_dict=False)[0]
    train.update(transformer, ema, optimizer, out.pow(2).mean(), step=0, ema_decay=0.99)
    assert any(not torch.equal(a, b) for a, b in zip(before, transformer.parameters()))
    # both start from the same seeded weights; at step 0 the EMA's decay is 1/10: it moves 90% of the way
    p, e = next(transformer.parameters()), next(ema.parameters())
    torch.testing.assert_close(e, before[0] + 0.9 * (p.detach() - before[0]))
