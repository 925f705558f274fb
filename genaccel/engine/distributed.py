"""Several processes on one job, through accelerate: which process this is, and where it runs.

`accelerate launch -m genaccel batch FILE --out DIR` (or torchrun) starts the processes and sets
WORLD_SIZE; `process_state` then returns accelerate's `PartialState`, whose `split_between_processes`
gives each process its share of a batch (`genaccel.generation.batch.run_batch`). Without a launcher there is one
process and no state.
"""

from __future__ import annotations

import os

import torch


def launched() -> bool:
    """Whether a launcher (accelerate, torchrun) started several processes for this job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state(device: str = "auto"):
    """accelerate's `PartialState` of this process when launched as one of several, else None.

    On CPU (asked for, or no CUDA) the processes talk over gloo: `PartialState(cpu=True)`, which
    accelerate needs to choose gloo when its launcher was told `--multi_gpu` on a machine without one.
    """
    if not launched():
        return None
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def process_device(state, device: str = "auto") -> str:
    """The device this process runs on: its own GPU under a launcher, else `device`."""
    if state is None or state.device.type != "cuda":
        return device
    return str(state.device)


# ----------------------------------------------------------------------------- context parallelism
CONTEXT_PARALLEL_KINDS = ("ring", "ulysses")


def parse_context_parallel(text: str) -> dict[str, int]:
    """{"ring": R, "ulysses": U} from "ring=2", "ulysses=4" or "ring=2,ulysses=2"; InputError otherwise."""
    from genaccel.errors import InputError

    degrees = {}
    for part in text.split(","):
        kind, _, value = part.strip().partition("=")
        kind = kind.strip().lower()
        if kind not in CONTEXT_PARALLEL_KINDS or kind in degrees or not value.strip().isdigit() or int(value) < 1:
            raise InputError(f"--context-parallel must look like ring=N, ulysses=N or ring=N,ulysses=M; got '{text}'")
        degrees[kind] = int(value)
    if shard_count(degrees) < 2:
        raise InputError(f"--context-parallel {text}: split the sequence over 2 or more processes")
    return degrees


def shard_count(degrees: dict[str, int] | None) -> int:
    """The number of processes `degrees` split the sequence across (1 without context parallelism)."""
    return (degrees or {}).get("ring", 1) * (degrees or {}).get("ulysses", 1)


def accelerators_refusal(accelerators) -> str | None:
    """Why the first of `accelerators` (classes or instances) that cannot run split cannot; None if all can."""
    for accelerator in accelerators:
        reason = accelerator.context_parallel_refusal()
        if reason:
            return f"{accelerator.name} cannot run with --context-parallel: {reason}"
    return None


def context_parallel_refusal(pipe, family, accelerators, degrees: dict[str, int]) -> str | None:
    """Why `pipe` with these accelerators cannot run split as `degrees` asks here; None if it can."""
    import torch.distributed as dist

    for _, denoiser in family.denoiser_modules(pipe):
        if getattr(denoiser, "_cp_plan", None) is None:
            return (
                f"{family.title}'s transformer ({type(denoiser).__name__}) has no context-parallel plan in "
                "diffusers: it runs on one device (families with a plan: Wan, LTX-Video)"
            )
    refusal = accelerators_refusal(accelerators)
    if refusal:
        return refusal
    if not dist.is_available() or not dist.is_initialized():
        return (
            "--context-parallel needs one process per shard: start it with "
            f"`accelerate launch --num_processes {shard_count(degrees)} -m genaccel generate ...`"
        )
    if dist.get_world_size() != shard_count(degrees):
        return (
            f"--context-parallel {_format(degrees)} splits the sequence over {shard_count(degrees)} processes, but "
            f"{dist.get_world_size()} were launched"
        )
    return None


def _format(degrees: dict[str, int]) -> str:
    return ",".join(f"{kind}={n}" for kind, n in degrees.items())


def enable_context_parallel(pipe, acceleration, degrees: dict[str, int]) -> None:
    """Split every denoiser's sequence across the launched processes with diffusers' ContextParallelConfig,
    after `acceleration`'s hooks (so they see one shard: diffusers' split hooks wrap them), and make the
    accelerators' activation-based decisions agree across processes (`Runtime.sharded`)."""
    from diffusers import ContextParallelConfig

    from genaccel.errors import InputError

    reason = context_parallel_refusal(pipe, acceleration.family, acceleration.accelerators, degrees)
    if getattr(pipe, "_genaccel_split_for", None) is not None:  # diffusers splits a model once
        reason = (
            f"this process split its model for '{pipe._genaccel_split_for}' and cannot re-apply accelerators "
            "under the split: start the process again for another spec"
        )
    if reason:
        raise InputError(reason)
    for _, denoiser in acceleration.family.denoiser_modules(pipe):
        denoiser.enable_parallelism(
            config=ContextParallelConfig(ring_degree=degrees.get("ring"), ulysses_degree=degrees.get("ulysses"))
        )
    acceleration.runtime.sharded = True
    pipe._genaccel_split_for = acceleration.spec
