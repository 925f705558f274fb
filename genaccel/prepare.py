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

from genaccel.errors import InputError
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


def model_settings(pipe) -> list[str]:
    """Names of the settings a loaded model offers ("default" always)."""
    return ["default", *(getattr(pipe, "_genaccel_defaults", None) or {}).get("settings", {})]


def model_defaults(pipe, setting: str = "default") -> dict[str, Any]:
    """Call defaults of a loaded pipeline for a setting, with the setting's extra pipeline arguments
    under "extra" (empty where genaccel knows nothing: the pipeline's own defaults apply)."""
    defaults = dict(getattr(pipe, "_genaccel_defaults", None) or {})
    settings = defaults.pop("settings", {})
    _check_defaults(defaults, "")
    if setting != "default":
        if setting not in settings:
            raise InputError(f"this model has no '{setting}' setting (settings: {', '.join(model_settings(pipe))})")
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


def prepare(pipe, request: GenerationRequest) -> PreparedRequest:
    """Complete and check `request` for `pipe`; raise InputError or SpecError naming the problem."""
    family = family_of(pipe)
    defaults = model_defaults(pipe, request.setting)
    filled = dataclasses.replace(request, **{
        name: defaults[name] for name in DEFAULTED if getattr(request, name) is None and name in defaults})
    if filled.num_frames is not None:
        family.check_frames(filled.num_frames, pipe)
    if filled.height is not None or filled.width is not None:
        family.check_size(filled.height or family.size_multiple, filled.width or family.size_multiple)
    spec = None if filled.accel is None else resolve_spec(filled.accel, family, pipeline_model_key(pipe))
    call = {**defaults.get("extra", {}), **family.call_extra,
            "prompt": filled.prompt, "negative_prompt": filled.negative_prompt, "output_type": "np"}
    for name in DEFAULTED:  # the family names the frame argument (Latte: video_length)
        if getattr(filled, name) is not None:
            call[family.frames_arg if name == "num_frames" else name] = getattr(filled, name)
    return PreparedRequest(filled, family, spec, call)
