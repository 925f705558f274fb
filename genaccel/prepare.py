"""The one preparation step between a request and the pipeline call.

`prepare(pipe, request)` resolves the request's accelerator spec against the model (presets,
family support, stacking), fills unset fields from the model's defaults for the request's setting,
checks what only the model can check (frame rule, size multiple), and builds the pipeline's
keyword arguments. `genaccel.generate` trusts what it returns and checks nothing again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genaccel.errors import InputError, MemoryFitError
from genaccel.estimate import REMEDIES, MemoryEstimate, ModelSizes, device_budget, estimate_peak, fit_message
from genaccel.pipelines.families import FamilyAdapter, family_of
from genaccel.profiles import pipeline_model_key
from genaccel.request import GenerationRequest
from genaccel.spec import ResolvedSpec, resolve_spec

# Request fields that a model's defaults (genaccel.toml, the tiny pipelines' table) may fill.
DEFAULTED = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale")


@dataclass(frozen=True)
class PreparedRequest:
    """A request completed and checked for one pipeline, ready to run."""

    request: GenerationRequest  # unset fields filled from the model's defaults
    family: FamilyAdapter
    spec: ResolvedSpec | None  # None: run with whatever genaccel applied to the pipeline
    call: dict[str, Any]  # the pipeline's keyword arguments, except the generator (made per call)
    memory: MemoryEstimate | None = None  # the run's estimated peak (None where the model's sizes are unknown)
    notices: tuple[str, ...] = ()  # what the user should know but that does not stop the run (a truncated prompt)


@dataclass(frozen=True)
class ModelFacts:
    """What checking a request needs to know of a model: from a loaded pipeline (`of`), or from the model's
    files before any weight is loaded (`genaccel.models.model_facts`)."""

    family: FamilyAdapter
    key: str  # the profile and preset key
    defaults: dict  # genaccel's call defaults, with their named settings ({} where genaccel knows none)
    fixed_frames: int | None = None  # the frame count the model's config fixes (Latte), else None

    @classmethod
    def of(cls, pipe) -> "ModelFacts":
        family = family_of(pipe)
        return cls(family, pipeline_model_key(pipe), getattr(pipe, "_genaccel_defaults", None) or {},
                   family.fixed_frames(pipe))


def model_settings(pipe) -> list[str]:
    """Names of the settings a loaded model offers ("default" always)."""
    return _settings_of(getattr(pipe, "_genaccel_defaults", None) or {})


def _settings_of(table: dict) -> list[str]:
    return ["default", *table.get("settings", {})]


def model_defaults(pipe, setting: str = "default") -> dict[str, Any]:
    """Call defaults of a loaded pipeline for a setting, with the setting's extra pipeline arguments
    under "extra" (empty where genaccel knows nothing: the pipeline's own defaults apply)."""
    return setting_defaults(getattr(pipe, "_genaccel_defaults", None) or {}, setting)


def setting_defaults(table: dict, setting: str = "default") -> dict[str, Any]:
    """The call defaults of one setting out of a model's defaults table (genaccel.toml's)."""
    defaults = dict(table)
    settings = defaults.pop("settings", {})
    _check_defaults(defaults, "")
    if setting != "default":
        if setting not in settings:
            raise InputError(f"this model has no '{setting}' setting (settings: {', '.join(_settings_of(table))})")
        chosen = dict(settings[setting])
        _check_defaults(chosen, f"[settings.{setting}] ")
        extra = {**defaults.get("extra", {}), **chosen.pop("extra", {})}
        defaults.update(chosen, extra=extra)
    return defaults


def _check_defaults(table: dict, where: str) -> None:
    """A model's defaults name request fields (and an [extra] table of pipeline arguments), nothing else."""
    from genaccel.errors import ModelError

    unknown = set(table) - set(DEFAULTED) - {"extra"}
    if unknown:
        raise ModelError(f"the model's genaccel.toml: {where}unknown key(s) {', '.join(sorted(unknown))} "
                         f"(allowed: {', '.join(DEFAULTED)}, [extra])")


def complete(facts: ModelFacts, request: GenerationRequest) -> tuple[GenerationRequest, dict, ResolvedSpec | None]:
    """`request` with unset fields filled from the model's defaults for its setting, checked against the
    model's rules (frame counts, size multiple, accelerator support); also returns the setting's defaults
    and the resolved spec. Raises InputError or SpecError naming the field."""
    family = facts.family
    defaults = setting_defaults(facts.defaults, request.setting)
    filled = dataclasses.replace(request, **{
        name: defaults[name] for name in DEFAULTED if getattr(request, name) is None and name in defaults})
    if filled.num_frames is not None:
        family.check_frames(filled.num_frames, fixed=facts.fixed_frames)
    if filled.height is not None or filled.width is not None:
        family.check_size(filled.height or family.size_multiple, filled.width or family.size_multiple)
    spec = None if filled.accel is None else resolve_spec(filled.accel, family, facts.key, filled.setting)
    return filled, defaults, spec


def check_before_loading(model: str, request: GenerationRequest) -> None:
    """Everything `prepare` checks that the model's files tell without loading its weights (a local folder,
    the embedded model): a typo costs one line, not a model load. Nothing for hub ids."""
    from genaccel.models import model_facts

    facts = model_facts(model)
    if facts is not None:
        complete(facts, request)


def prepare(pipe, request: GenerationRequest, *, check_fit: bool = True) -> PreparedRequest:
    """Complete and check `request` for `pipe`; raise InputError or SpecError naming the problem, and
    MemoryFitError when its estimated peak memory exceeds the budget (unless `check_fit` is False)."""
    facts = ModelFacts.of(pipe)
    family = facts.family
    filled, defaults, spec = complete(facts, request)
    _check_context_parallel(pipe, spec)
    _check_accelerators(spec, filled, facts)
    call = {**defaults.get("extra", {}), **family.call_extra,
            "prompt": filled.prompt, "negative_prompt": filled.negative_prompt, "output_type": "np"}
    for name in DEFAULTED:  # the family names the frame argument (Latte: video_length)
        if getattr(filled, name) is not None:
            call[family.frames_arg if name == "num_frames" else name] = getattr(filled, name)
    memory = check_memory(pipe, filled, spec, family) if check_fit else estimate_memory(pipe, filled, spec, family)
    return PreparedRequest(filled, family, spec, call, memory, prompt_notices(pipe, filled, call))


def _check_accelerators(spec: ResolvedSpec | None, request: GenerationRequest, facts: ModelFacts) -> None:
    """What each accelerator needs of this run and the model's calibrated profile (a schedule for its
    step count), before any work."""
    from genaccel.errors import SpecError
    from genaccel.profiles import load_profile

    if spec is None or not spec.accelerators:
        return
    profile = load_profile(facts.key)
    for cls, config in spec.accelerators:
        try:
            cls.check_request(config, request, profile)
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
            notices.append(f"the {label} is longer than the {limit} tokens the text encoder reads; the rest "
                           "is ignored")
    return tuple(notices)


def _check_context_parallel(pipe, spec: ResolvedSpec | None) -> None:
    """Under context parallelism: accelerators that keep the processes in step, and the spec the split
    was set up with (diffusers' split hooks wrap the accelerators' once, for the process's lifetime)."""
    from genaccel.acceleration import acceleration_of
    from genaccel.distributed import accelerators_refusal
    from genaccel.errors import SpecError

    if not getattr(pipe, "_genaccel_context_parallel", None) or spec is None:
        return
    refusal = accelerators_refusal(cls for cls, _ in spec.accelerators)
    if refusal:
        raise SpecError(refusal)
    split_for = getattr(pipe, "_genaccel_split_for", None)
    current = acceleration_of(pipe)
    if split_for is not None and (current is None or current.spec != spec.text):
        raise SpecError(f"this process split its model for '{split_for}'; under --context-parallel every "
                        f"generation of a process runs that spec (asked: '{spec.text}')")


def estimate_memory(pipe, request: GenerationRequest, spec: ResolvedSpec | None = None, family=None,
                    sizes: ModelSizes | None = None, **overrides) -> MemoryEstimate | None:
    """The estimated peak of `request` on `pipe`'s device (fields of `overrides` replace the request's);
    None when the request leaves a size to the pipeline's own defaults. `sizes`: `ModelSizes.of(pipe)`,
    when the caller has it already."""
    from genaccel.distributed import shard_count
    from genaccel.offload import placement, target_device

    request = dataclasses.replace(request, **overrides)
    if None in (request.num_frames, request.height, request.width):
        return None
    placed = placement(pipe) or ("none", False)
    sizes = sizes or ModelSizes.of(pipe, family)
    guidance = request.guidance_scale if request.guidance_scale is not None else 5.0
    return estimate_peak(sizes, num_frames=request.num_frames, height=request.height, width=request.width,
                         guidance_scale=guidance, accelerators=spec.accelerators if spec else (),
                         offload=request.offload or placed[0],
                         vae_tiling=request.vae_tiling if request.vae_tiling is not None else placed[1],
                         device=target_device(pipe).type,
                         shards=shard_count(getattr(pipe, "_genaccel_context_parallel", None)))


def check_memory(pipe, request: GenerationRequest, spec: ResolvedSpec | None = None,
                 family=None) -> MemoryEstimate | None:
    """The run's estimate, or MemoryFitError when it exceeds the budget (`max_memory`, else what the device
    has free), naming the first option of REMEDIES that would make it fit."""
    from genaccel.offload import target_device
    from genaccel.request import parse_size

    sizes = ModelSizes.of(pipe, family)
    estimate = estimate_memory(pipe, request, spec, family, sizes)
    if estimate is None:
        return None
    budget = parse_size(request.max_memory) if request.max_memory else device_budget(pipe, target_device(pipe))
    if estimate.peak <= budget:
        return estimate
    alternatives = {flag: estimate_memory(pipe, request, spec, family, sizes, **fields) for flag, fields in REMEDIES}
    raise MemoryFitError(fit_message(estimate, budget, alternatives))
