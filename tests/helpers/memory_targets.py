"""Functions that tests/test_memory.py runs in a fresh process (with tests/helpers/ on PYTHONPATH)."""

import numpy as np


def generate_holding_buffer(payload):
    """`generation_peak`'s run, plus a buffer of payload["buffer_bytes"] allocated inside it.

    The buffer is allocated and touched when the transformer is first called, and held until the
    generation ends.
    """
    import genaccel

    pipe = genaccel.load_pipeline(payload["model"], device=payload["device"])
    genaccel.apply(pipe, payload["accel"])
    held = []

    def allocate(module, args):
        if not held:
            held.append(np.ones(payload["buffer_bytes"], dtype=np.uint8))  # ones: every page touched

    pipe.transformer.register_forward_pre_hook(allocate)
    genaccel.generate(pipe, genaccel.GenerationRequest(**payload["request"]))
    return {"held_bytes": int(held[0].nbytes)}


def fail(payload):
    raise ValueError("the target failed\non purpose")
