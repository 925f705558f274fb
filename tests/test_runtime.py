"""Generation and chunk boundaries are declared by the caller; the timesteps rule is only the
fallback for a pipeline called directly."""

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel import apply


class StateProbe(ModelHook):
    """A stateful hook that counts its resets (what every cache's state goes through)."""

    _is_stateful = True

    def __init__(self):
        super().__init__()
        self.resets = 0

    def reset_state(self, module):
        self.resets += 1
        return module


def _denoise_calls(pipe, n: int) -> None:
    """n transformer calls as a denoising loop makes them: random latents, one timestep each."""
    transformer = pipe.transformer
    config = transformer.config
    latents = torch.randn(1, config.in_channels, 3, 8, 8)
    text = torch.randn(1, 16, config.text_dim)
    with torch.inference_mode():
        for t in pipe.scheduler.timesteps[:n]:
            transformer(hidden_states=latents, timestep=t.reshape(1), encoder_hidden_states=text, return_dict=False)


def test_chunks_keep_state_and_a_new_generation_resets_it(tiny):
    pipe = tiny("wan")
    acceleration = apply(pipe, "teacache(threshold=0.5,coefficients=identity)")
    runtime = acceleration.runtime
    probe = StateProbe()
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    registry.register_hook(probe, "test_state_probe")
    try:
        with acceleration.generation():
            generation = runtime.generation
            pipe.scheduler.set_timesteps(4)
            _denoise_calls(pipe, 2)
            resets, teacache = probe.resets, acceleration.stats()["accelerators"]["teacache"]
            assert runtime.step_index == 1 and runtime.chunk_index == 0
            # A streaming generator sets new timesteps for every chunk: state must survive that.
            assert acceleration.begin_chunk() == 1
            pipe.scheduler.set_timesteps(4)
            _denoise_calls(pipe, 3)
            assert probe.resets == resets and runtime.generation == generation
            assert runtime.chunk_index == 1 and runtime.step_index == 2  # steps count within the chunk
            stats = acceleration.stats()
            assert stats["transformer_calls"] == 5  # figures add up over the chunks
            assert stats["accelerators"]["teacache"]["passes_computed"] > teacache["passes_computed"]
        # A new declared generation resets state, figures and the chunk index.
        with acceleration.generation():
            assert probe.resets > resets and runtime.chunk_index == 0 and runtime.generation == generation + 1
            assert acceleration.stats()["transformer_calls"] == 0
        # Called directly, outside a declaration: new timesteps still mean a new generation.
        resets = probe.resets
        pipe.scheduler.set_timesteps(4)
        _denoise_calls(pipe, 1)
        assert probe.resets > resets and runtime.generation == generation + 2
        _denoise_calls(pipe, 1)  # same timesteps: the same generation
        assert runtime.generation == generation + 2 and runtime.step_index == 1
    finally:
        registry.remove_hook("test_state_probe", recurse=False)
        acceleration.remove()


def test_begin_chunk_needs_a_declared_generation(tiny):
    import pytest

    acceleration = apply(tiny("wan"), "none")
    with pytest.raises(RuntimeError, match="declared generation"):
        acceleration.begin_chunk()
    acceleration.remove()


def test_step_count_is_known_when_state_is_set_up(tiny):
    """MagCache matches its ratios to the run's step count: the first generate() after apply(), and a
    later one with another step count, must both see their own count."""
    from genaccel.generation.generate import generate

    pipe = tiny("wan")
    acceleration = apply(
        pipe, "magcache(threshold=0.5,max_skip=2,retention=0)", profile={"magcache": {"ratios": [1.0] * 8}}
    )
    try:
        for steps in (6, 10):
            result = generate(pipe, "a red circle moving left on a black background", steps=steps)
            assert acceleration.runtime.num_steps == steps
            assert result.stats["skipped_calls"] > 0, steps
    finally:
        acceleration.remove()
