"""Accelerator specs: `name(key=value,...)+name+...`, a TOML/JSON file, a preset name, or `none`.

Parsing turns text into `AccelRequest`s; `resolve` checks them against a pipeline family (known
accelerator and parameters, valid values, supported by the family, stackable) and builds configs.
Every problem raises a `SpecError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import tomllib

from genaccel.accelerators import ACCELERATORS
from genaccel.engine.acceleration import ResolvedSpec
from genaccel.errors import SpecError
from genaccel.models.presets import presets_for

PRESET_NAMES = ("quality", "balanced", "fast")
# Names are ASCII: lowered, a Unicode name can change length or letters ('İ' lowers to 'i' and a combining dot).
_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass
class AccelRequest:
    """One accelerator asked for by name, with its raw parameters."""

    name: str
    params: dict[str, object] = field(default_factory=dict)

    def __str__(self):
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={_format_value(v)}" for k, v in self.params.items())
        return f"{self.name}({inner})"


def _format_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return ":".join(_format_value(v) if isinstance(v, str) else str(v) for v in value)
    if isinstance(value, str) and _parse_scalar(value) != value:
        return f'"{value}"'  # text that would read back as a number, a flag or stripped ('1', 'true', ' a'): quoted
    return str(value)


def _shown(text) -> str:
    """Text as a one-line message shows it: line breaks and other unprintable characters escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def format_spec(requests: list[AccelRequest]) -> str:
    """The canonical spec string of a list of requests (`none` when empty)."""
    return "+".join(str(r) for r in requests) or "none"


# --------------------------------------------------------------------- parsing
def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in spec '{_shown(text)}'")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced '(' in spec '{_shown(text)}'")
    parts.append("".join(current))
    return parts


def _parse_scalar(text: str):
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if ":" in text:
        return tuple(_parse_scalar(t) for t in text.split(":"))
    return text.strip("'\"")


def parse_spec_string(text: str) -> list[AccelRequest]:
    """Parse `name(key=value,...)+name` into requests (no validation against a family)."""
    text = text.strip()
    if not text:
        raise SpecError("empty accelerator spec (use 'none' for the plain pipeline)")
    if text.lower() == "none":
        return []
    requests = []
    for item in _split_top_level(text, "+"):
        match = _ITEM.match(item)
        if not match:
            raise SpecError(
                f"malformed accelerator '{_shown(item.strip())}' in spec '{_shown(text)}' "
                "(expected name or name(key=value,...))"
            )
        name, body = match.group(1).lower(), match.group(2)
        if name == "none":  # printed back, a lone 'none()' would read as no accelerator at all
            raise SpecError(f"'none' stands alone, without parameters or other accelerators (spec '{_shown(text)}')")
        params: dict[str, object] = {}
        if body and body.strip():
            for pair in _split_top_level(body, ","):
                if "=" not in pair:
                    raise SpecError(f"malformed parameter '{_shown(pair.strip())}' of {name} (expected key=value)")
                key, value = pair.split("=", 1)
                key = key.strip()
                if not key:
                    raise SpecError(f"malformed parameter '{_shown(pair.strip())}' of {name} (empty name)")
                if key in params:
                    raise SpecError(f"parameter '{_shown(key)}' of {name} given twice")
                params[key] = _parse_scalar(value)
        requests.append(AccelRequest(name, params))
    return requests


def parse_spec_file(path: Path) -> list[AccelRequest]:
    """A TOML or JSON file: a table/object per accelerator in order, or a list of {name: ..., ...}."""
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read spec file {_shown(path)}: {_shown(exc)}") from None
    except RecursionError:
        raise SpecError(f"cannot read spec file {_shown(path)}: nested too deeply") from None
    if isinstance(data, dict) and "accelerators" in data:
        data = data["accelerators"]
    if isinstance(data, dict):
        for name, params in data.items():
            if params is not None and not isinstance(params, dict):
                raise SpecError(f"spec file {_shown(path)}: '{_shown(name)}' must be a table of parameters")
        items = [{"name": name, **(params or {})} for name, params in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        raise SpecError(f"spec file {_shown(path)} must hold a table per accelerator or a list of them")
    requests = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            raise SpecError(f"spec file {_shown(path)}: every accelerator needs a 'name'")
        params = {k: v for k, v in item.items() if k != "name"}
        requests.append(AccelRequest(str(item["name"]).lower(), params))
    return requests


def _is_preset(part: str, presets: Mapping[str, str] | None = None, *, anywhere: bool = False) -> bool:
    """True if `part` names a preset: a built-in one, or one of `presets` (the model's, tuned ones included);
    `anywhere`: one tuned for any model on this machine (when no model is known yet)."""
    name = part.strip().lower()
    if name in PRESET_NAMES or name in (presets or {}):
        return True
    if not anywhere or name in ACCELERATORS or name == "none" or not re.fullmatch(r"[a-z_][a-z0-9_-]*", name):
        return False
    from genaccel.models.presets import any_tuned_name

    return any_tuned_name(name)


def _preset_parts(text: str, presets: Mapping[str, str] | None = None, *, anywhere: bool = False) -> list[str] | None:
    """The parts of a stack that names a preset among accelerators (`balanced+sta`), or None."""
    parts = [part.strip() for part in _split_top_level(text, "+")]
    if len(parts) > 1 and any(_is_preset(part, presets, anywhere=anywhere) for part in parts):
        return parts
    return None


def parse_spec(spec: str, family=None, presets: Mapping[str, str] | None = None) -> list[AccelRequest]:
    """Parse a spec string, a spec file path, or a preset name; a preset may also stand in a stack
    (`balanced+sta`), where it contributes its accelerators. `presets` maps the model's preset names to their
    spec strings for the run's setting (`ModelFacts.presets`); without it, a preset is the family's."""
    text = "none" if spec is None else spec.strip()
    if presets is None and family is not None:
        presets = presets_for(family.name)
    parts = _preset_parts(text, presets)
    if parts:
        return [request for part in parts for request in parse_spec(part, family, presets)]
    if _is_preset(text, presets):
        if family is None:
            raise SpecError(f"preset '{text}' needs a model to pick the family's preset")
        if text.lower() not in presets:
            raise SpecError(f"no preset '{text.lower()}' for {family.title}")
        return parse_spec_string(presets[text.lower()])
    if re.search(r"\.(toml|json)$", text, re.I):
        try:
            path = Path(text).expanduser()
        except (RuntimeError, ValueError):  # '~name' of no user, or a NUL byte: not a file either way
            path = Path(text)
        try:
            found = path.is_file()
        except OSError as exc:  # a name too long, a folder that cannot be read
            raise SpecError(f"cannot read spec file {_shown(text)}: {_shown(exc.strerror or exc)}") from None
        if not found:
            raise SpecError(f"spec file not found: {_shown(text)}")
        return parse_spec_file(path)
    return parse_spec_string(text)


# --------------------------------------------------------------------- validation
def _convert(value, hint, where: str):
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
            return value
        if hint is str:
            if isinstance(value, (list, tuple)):
                return "[" + ";".join(str(v) for v in value) + "]"
            return str(value)
        if origin is tuple:
            args = typing.get_args(hint)
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise ValueError
            return tuple(_convert(v, a, where) for v, a in zip(value, args))
    except (ValueError, TypeError, OverflowError):  # OverflowError: an int too large for a float
        pass
    if origin is tuple:
        expected = (
            "low:high" if len(typing.get_args(hint)) == 2 else f"{len(typing.get_args(hint))} numbers joined by ':'"
        )
    elif hint is bool:
        expected = "true or false"
    elif hint is float:
        expected = "a finite number"
    else:
        expected = getattr(hint, "__name__", str(hint))
    raise SpecError(f"bad value {_format_value(value)!r} for {where} (expected {expected})")


def build_config(request: AccelRequest):
    """Validate one request's parameters and build its config dataclass."""
    cls = ACCELERATORS.get(request.name)
    if cls is None:
        known = ", ".join(sorted(ACCELERATORS))
        raise SpecError(f"unknown accelerator '{_shown(request.name)}' (known: {known}, or none)")
    config_cls = cls.config_class
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {}
    for key, value in request.params.items():
        if key not in fields:
            raise SpecError(
                f"unknown parameter '{_shown(key)}' for {request.name} (parameters: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _convert(value, hints[key], f"{request.name}.{key}")
    config = config_cls(**kwargs)
    try:
        config.validate()
    except ValueError as exc:
        raise SpecError(f"bad value for {request.name}: {_shown(exc)}") from None
    return cls, config


def resolve(requests: list[AccelRequest], family) -> list[tuple[type, object]]:
    """Check requests against a family and each other; return (accelerator class, config) pairs."""
    resolved = []
    for request in requests:
        cls, config = build_config(request)
        why = cls.unsupported_reason(family) if family is not None else None
        if why:
            raise SpecError(f"{cls.name} does not support {family.title}: {why}")
        for earlier, _ in resolved:
            why = stack_conflict(earlier.name, cls.name)
            if why:
                raise SpecError(f"{earlier.name} and {cls.name} cannot stack: {why}")
        resolved.append((cls, config))
    return resolved


def check_spec(spec: str) -> None:
    """Check what can be checked before a model is loaded: syntax, names, parameters, stacking."""
    text = "none" if spec is None else spec.strip()
    if _is_preset(text, anywhere=True):
        return
    parts = _preset_parts(text, anywhere=True)
    if parts:  # a preset's accelerators are known only with the model: check the others
        others = [part for part in parts if not _is_preset(part, anywhere=True)]
        if not others:
            return
        text = "+".join(others)  # an empty part ('balanced+') stays, to be refused
    resolve(parse_spec(text), family=None)


def stack_conflict(a: str, b: str) -> str | None:
    """Why accelerators a and b cannot stack, or None if they can."""
    first, second = ACCELERATORS[a], ACCELERATORS[b]
    shared = first.slots & second.slots
    if a == b or shared:
        return "same accelerator" if a == b else f"both take over {', '.join(sorted(shared)).replace('_', ' ')}"
    for one, other in ((first, second), (second, first)):
        for slot, why in one.excludes.items():
            if slot in other.slots:
                return why
        for slot, why in one.needs_full_passes.items():
            if slot in other.slots and not other.honours_full_pass:
                return why
    return None


def resolve_spec(spec: str, family, presets: Mapping[str, str] | None = None) -> ResolvedSpec:
    """Parse a spec (string, file, or one of `presets`: the model's for the run's setting) and check it
    against `family`. Reads no profile: the presets come from the run's `ModelFacts`."""
    requests = parse_spec(spec, family, presets)
    return ResolvedSpec(format_spec(requests), tuple(resolve(requests, family)))
