"""Training code that ships with the embedded model: the block-causal variant really is causal,
and the schedules stay in range."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("train_transformer", Path(__file__).parents[1] / "training" / "train_transformer.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)

CFG = {
    "seed": 0,
    "model": {"num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 2, "ffn_dim": 32, "freq_dim": 16,
              "attention": "block_causal", "chunk_frames": 1},
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
