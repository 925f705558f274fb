"""The accelerator controls of the web UI and their two-way mapping to spec strings.

The page shows, per accelerator, a toggle and one input per config parameter. Their values travel
as one flat list in a fixed order (`CONTROL_LAYOUT`): for each accelerator, its toggle, then its
parameters. A preset fills the controls from its spec; the controls build the spec that runs.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from genaccel.accelerators import ACCELERATORS
from genaccel.accelerators.base import SLOT_KV_CACHE
from genaccel.errors import SpecError
from genaccel.generation.spec import AccelRequest, check_spec, format_spec, parse_spec, parse_spec_string


@dataclass(frozen=True)
class ParamControl:
    accel: str
    name: str
    kind: str  # "int", "float", "bool", "text"
    default: object
    help: str


def _kind(hint) -> str:
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    return "text"  # strings and low:high ranges


def _display(value, kind: str):
    """A config value as the UI shows it (ranges as "low:high")."""
    if kind == "text" and isinstance(value, (tuple, list)):
        return ":".join(str(v) for v in value)
    return value


def _param_controls(name: str) -> list[ParamControl]:
    config_class = ACCELERATORS[name].config_class
    hints = typing.get_type_hints(config_class)
    controls = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _kind(hints[f.name])
        controls.append(ParamControl(name, f.name, kind, _display(default, kind), f.metadata.get("help", "")))
    return controls


# The rolling KV cache only acts in a stream: the Stream tab sets it (window, sink), not these toggles.
CONTROL_LAYOUT: dict[str, list[ParamControl]] = {
    name: _param_controls(name) for name, cls in ACCELERATORS.items() if SLOT_KV_CACHE not in cls.slots
}


def control_count() -> int:
    return sum(1 + len(params) for params in CONTROL_LAYOUT.values())


def default_controls() -> list:
    """Flat control values with every accelerator off and every parameter at its default."""
    values = []
    for params in CONTROL_LAYOUT.values():
        values.append(False)
        values += [p.default for p in params]
    return values


def controls_from_spec(spec: str, family=None, presets: dict[str, str] | None = None) -> list:
    """Flat control values for a spec string or preset name; `presets` maps the model's preset names to their
    specs for the chosen setting (`model_info`'s "preset_specs"). Raises SpecError if the spec is invalid."""
    requests = {r.name: r for r in parse_spec(spec, family, presets)}
    unknown = set(requests) - set(CONTROL_LAYOUT)
    if unknown:
        raise SpecError(f"unknown accelerator(s): {', '.join(sorted(unknown))}")
    values = []
    for name, params in CONTROL_LAYOUT.items():
        request = requests.get(name)
        values.append(request is not None)
        for p in params:
            raw = request.params.get(p.name, p.default) if request else p.default
            values.append(_display(raw, p.kind))
    return values


def _clean(value, control: ParamControl):
    if control.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if control.kind == "text":
        return _typed_text(str(value).strip(), control)
    return value


def _typed_text(text: str, control: ParamControl):
    """A text box's value as a spec string reads it ("200:700" is a range, not the text "200:700"), so the
    spec the controls build reads back the same."""
    if not text or any(ch in text for ch in ",()+="):
        return text  # not one spec value: the spec's check names the problem
    try:
        return parse_spec_string(f"{control.accel}({control.name}={text})")[0].params[control.name]
    except SpecError:
        return text


def spec_from_controls(values: list) -> str:
    """The spec string the controls describe, listing only parameters changed from their defaults.

    Parameters and stacking are validated (SpecError names the problem).
    """
    if len(values) != control_count():
        raise ValueError(f"expected {control_count()} control values, got {len(values)}")
    requests, position = [], 0
    for name, params in CONTROL_LAYOUT.items():
        enabled = values[position]
        chunk = values[position + 1 : position + 1 + len(params)]
        position += 1 + len(params)
        if not enabled:
            continue
        changed = {}
        for control, value in zip(params, chunk):
            if value is None or value == "":
                continue  # an emptied field means "default"
            value = _clean(value, control)
            if str(_display(value, control.kind)) != str(control.default):  # as shown: (100, 800) is "100:800"
                changed[control.name] = value
        requests.append(AccelRequest(name, changed))
    spec = format_spec(requests)
    check_spec(spec)  # parameters and stacking, with a readable message
    return spec
