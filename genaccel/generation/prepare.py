"""The one preparation step between a request and the pipeline call.

`prepare(pipe, request, facts)` resolves the request's accelerator spec against the model (its presets for
the request's setting, family support, stacking), fills unset fields from the model's defaults for that
setting, checks what only the model can check (frame rule, size multiple, the accelerators' calibrated
profile, memory), and builds the pipeline's keyword arguments. The model's facts (`ModelFacts`: family,
defaults, profiles) are read once per run, by the caller or here; nothing below reads a file again.
`genaccel.generation.generate` trusts what `prepare` returns and checks nothing again.

A request whose model's files tell its facts before loading (`model_facts`) is completed before the load
(`complete`), so a typo costs one line, not a model load; `prepare` then takes the completed request as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genaccel.attention.backends import DEFAULT as DEFAULT_BACKEND
from genaccel.attention.backends import unusable_reason
from genaccel.decoding.light import LightDecoder, check_decoder_path, light_decoder_for
from genaccel.engine.acceleration import NO_SPEC, Acceleration, ResolvedSpec, install
from genaccel.errors import InputError, MemoryFitError, SpecError
from genaccel.generation.request import GenerationRequest
from genaccel.generation.spec import resolve_spec
from genaccel.memory.estimate import REMEDIES, MemoryEstimate, ModelSizes, device_budget, estimate_peak, fit_message
from genaccel.models.facts import DEFAULTED, ModelFacts
from genaccel.pipelines.families import FamilyAdapter


@dataclass(frozen=True)
class CompletedRequest:
    """A request completed and checked against a model's facts, before any pipeline is needed."""

    request: GenerationRequest  # unset fields filled from the model's defaults for its setting
    facts: ModelFacts
    defaults: dict  # the setting's defaults (with its extra pipeline arguments under "extra")
    spec: ResolvedSpec | None  # None: run with whatever genaccel applied to the pipeline


@dataclass(frozen=True)
class PreparedRequest:
    """A request completed and checked for one pipeline, ready to run."""

    request: GenerationRequest  # unset fields filled from the model's defaults
    family: FamilyAdapter
    spec: ResolvedSpec | None  # None: run with whatever genaccel applied to the pipeline
    call: dict[str, Any]  # the pipeline's keyword arguments, except the generator (made per call)
    memory: MemoryEstimate | None = None  # the run's estimated peak (None where the model's sizes are unknown)
    notices: tuple[str, ...] = ()  # what the user should know but that does not stop the run (a truncated prompt)
    facts: ModelFacts | None = None  # the model's facts this request was prepared with
    light: LightDecoder | None = None  # what decodes the video when the request asks for a light decoder


def complete(facts: ModelFacts, request: GenerationRequest) -> CompletedRequest:
    """`request` with unset fields filled from the model's defaults for its setting, checked against the
    model's rules (frame counts, size multiple, accelerator support, the accelerators' calibrated profile)
    and its spec resolved against the presets of its setting. Raises InputError or SpecError naming the field."""
    family = facts.family
    defaults = facts.setting_defaults(request.setting)
    filled = dataclasses.replace(
        request, **{name: defaults[name] for name in DEFAULTED if getattr(request, name) is None and name in defaults}
    )
    if filled.num_frames is not None:
        family.check_frames(filled.num_frames, fixed=facts.fixed_frames)
    if filled.height is not None or filled.width is not None:
        family.check_size(filled.height or family.size_multiple, filled.width or family.size_multiple)
    if filled.decoder != "full" and not family.light_decoders:
        raise InputError(
            f"{family.title} has no light decoder (TAEHV decoders exist for Wan, HunyuanVideo and CogVideoX)"
        )
    try:
        check_decoder_path(filled.decoder)
    except ValueError as exc:
        raise InputError(f"--decoder: {exc}") from None
    spec = None if filled.accel is None else resolve_spec(filled.accel, family, facts.presets(filled.setting))
    if spec is not None and filled.attention != spec.attention:
        spec = dataclasses.replace(spec, attention=filled.attention)
    _check_accelerators(spec, filled, facts)
    return CompletedRequest(filled, facts, defaults, spec)


def prepare(
    pipe, request: GenerationRequest | CompletedRequest, facts: ModelFacts | None = None, *, check_fit: bool = True
) -> PreparedRequest:
    """Complete and check `request` for `pipe`; raise InputError or SpecError naming the problem, and
    MemoryFitError when its estimated peak memory exceeds the budget (unless `check_fit` is False).

    `facts`: the model's, when the caller read them already (a batch reads them once for all its requests);
    by default they are read from the pipeline. A `CompletedRequest` (from `complete`, before the model
    loaded) is taken as it is: its spec is not resolved again."""
    if isinstance(request, CompletedRequest):
        completed = request
    else:
        completed = complete(facts or ModelFacts.of(pipe), request)
    filled, family, spec = completed.request, completed.facts.family, completed.spec
    _check_context_parallel(pipe, spec)
    _check_attention(pipe, filled.attention, family)
    call = {
        **completed.defaults.get("extra", {}),
        **family.call_extra,
        "prompt": filled.prompt,
        "negative_prompt": filled.negative_prompt,
        "output_type": "np",
    }
    for name in DEFAULTED:  # the family names the frame argument (Latte: video_length)
        if getattr(filled, name) is not None:
            call[family.frames_arg if name == "num_frames" else name] = getattr(filled, name)
    light = light_decoder_for(pipe, family, filled.decoder)
    memory = check_memory(pipe, filled, spec, family) if check_fit else estimate_memory(pipe, filled, spec, family)
    notices = prompt_notices(pipe, filled, call)
    return PreparedRequest(filled, family, spec, call, memory, notices, completed.facts, light)


def apply(
    pipe, spec: str | ResolvedSpec = "none", *, facts: ModelFacts | None = None, profile: dict | None = None
) -> Acceleration:
    """Apply accelerators to a diffusers pipeline by hand, replacing any genaccel already applied (the Python
    API's `genaccel.apply`).

    `spec` is a spec string (`teacache(threshold=0.1)+pab`), a TOML/JSON path, a preset name (`quality`,
    `balanced`, `fast`, or one tuned for the model: the default setting's), `none`, or a spec already resolved
    by `prepare`. `profile`: a calibrated profile to use instead of the model's files (none is read then).
    Returns the `Acceleration`; `genaccel.remove(pipe)` or `acceleration.remove()` restores the pipeline."""
    facts = facts or ModelFacts.of(pipe, None if profile is None else (profile,))
    resolved = spec if isinstance(spec, ResolvedSpec) else resolve_spec(spec, facts.family, facts.presets())
    return install(pipe, resolved, facts.profile)


def install_prepared(pipe, prepared: PreparedRequest) -> Acceleration:
    """Install what `prepare` resolved (no spec when it left the pipeline as `apply` set it up)."""
    profile = prepared.facts.profile if prepared.facts is not None else ModelFacts.of(pipe).profile
    return install(pipe, prepared.spec or NO_SPEC, profile)


def _check_attention(pipe, backend: str, family) -> None:
    """The request's attention backend can run on the pipeline's device, through this family's attention."""
    if backend == DEFAULT_BACKEND:
        return
    why = unusable_reason(backend, getattr(pipe, "device", None))
    if why is None and not family.attention_dispatch:
        why = f"{family.title}'s attention does not go through diffusers' attention dispatch (native only)"
    if why:
        raise InputError(f"--attention {backend}: {why}")


def _check_accelerators(spec: ResolvedSpec | None, request: GenerationRequest, facts: ModelFacts) -> None:
    """What each accelerator needs of this run and the model's calibrated profile (a schedule for its
    step count), before any work."""
    if spec is None or not spec.accelerators:
        return
    for cls, config in spec.accelerators:
        try:
            cls.check_request(config, request, facts.profile)
        except ValueError as exc:
            raise SpecError(f"{cls.name} on {facts.family.title}: {exc}") from None


def text_token_limit(pipe, call: dict | None = None) -> int | None:
    """How many prompt tokens the pipeline's text encoder reads: the call's `max_sequence_length` (the
    model's defaults may set it), else the pipeline's default for it (Wan: 512), else the tokenizer's own
    limit; None when unknown."""
    import inspect

    if isinstance((call or {}).get("max_sequence_length"), int):
        return call["max_sequence_length"]
    parameter = inspect.signature(type(pipe).__call__).parameters.get("max_sequence_length")
    if parameter is not None and isinstance(parameter.default, int):
        return parameter.default
    limit = getattr(getattr(pipe, "tokenizer", None), "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 1_000_000 else None


def prompt_notices(pipe, request: GenerationRequest, call: dict | None = None) -> tuple[str, ...]:
    """A notice for each prompt longer than the text encoder reads (the rest of it is silently dropped)."""
    tokenizer, limit = getattr(pipe, "tokenizer", None), text_token_limit(pipe, call)
    if tokenizer is None or limit is None:
        return ()
    notices = []
    for label, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        if len(text) + 2 <= limit:  # a token covers at least one character: it fits
            continue
        # Counting stops one past the limit: enough to know, and the tokenizer does not warn about its length.
        if len(tokenizer(text, truncation=True, max_length=limit + 1)["input_ids"]) > limit:
            notices.append(f"the {label} is longer than the {limit} tokens the text encoder reads; the rest is ignored")
    return tuple(notices)


def _check_context_parallel(pipe, spec: ResolvedSpec | None) -> None:
    """Under context parallelism: accelerators that keep the processes in step, and the spec the split
    was set up with (diffusers' split hooks wrap the accelerators' once, for the process's lifetime)."""
    from genaccel.engine.acceleration import acceleration_of
    from genaccel.engine.distributed import accelerators_refusal

    if not getattr(pipe, "_genaccel_context_parallel", None) or spec is None:
        return
    refusal = accelerators_refusal(cls for cls, _ in spec.accelerators)
    if refusal:
        raise SpecError(refusal)
    split_for = getattr(pipe, "_genaccel_split_for", None)
    current = acceleration_of(pipe)
    if split_for is not None and (current is None or current.spec != spec.text):
        raise SpecError(
            f"this process split its model for '{split_for}'; under --context-parallel every "
            f"generation of a process runs that spec (asked: '{spec.text}')"
        )


def estimate_memory(
    pipe,
    request: GenerationRequest,
    spec: ResolvedSpec | None = None,
    family=None,
    sizes: ModelSizes | None = None,
    **overrides,
) -> MemoryEstimate | None:
    """The estimated peak of `request` on `pipe`'s device (fields of `overrides` replace the request's);
    None when the request leaves a size to the pipeline's own defaults. `sizes`: `ModelSizes.of(pipe)`,
    when the caller has it already."""
    from genaccel.engine.distributed import shard_count
    from genaccel.memory.offload import placement, target_device

    request = dataclasses.replace(request, **overrides)
    if None in (request.num_frames, request.height, request.width):
        return None
    placed = placement(pipe) or ("none", False)
    sizes = sizes or ModelSizes.of(pipe, family)
    guidance = request.guidance_scale if request.guidance_scale is not None else 5.0
    return estimate_peak(
        sizes,
        num_frames=request.num_frames,
        height=request.height,
        width=request.width,
        guidance_scale=guidance,
        accelerators=spec.accelerators if spec else (),
        offload=request.offload or placed[0],
        vae_tiling=request.vae_tiling if request.vae_tiling is not None else placed[1],
        device=target_device(pipe).type,
        shards=shard_count(getattr(pipe, "_genaccel_context_parallel", None)),
    )


def check_memory(
    pipe, request: GenerationRequest, spec: ResolvedSpec | None = None, family=None
) -> MemoryEstimate | None:
    """The run's estimate, or MemoryFitError when it exceeds the budget (`max_memory`, else what the device
    has free), naming the first option of REMEDIES that would make it fit."""
    from genaccel.generation.request import parse_size
    from genaccel.memory.offload import target_device

    sizes = ModelSizes.of(pipe, family)
    estimate = estimate_memory(pipe, request, spec, family, sizes)
    if estimate is None:
        return None
    budget = parse_size(request.max_memory) if request.max_memory else device_budget(pipe, target_device(pipe))
    if estimate.peak <= budget:
        return estimate
    alternatives = {flag: estimate_memory(pipe, request, spec, family, sizes, **fields) for flag, fields in REMEDIES}
    raise MemoryFitError(fit_message(estimate, budget, alternatives))
