"""The accelerator controls of the web UI and their two-way mapping to spec strings.

The page shows, per accelerator, a toggle and one input per config parameter. Their values travel
as one flat list in a fixed order (`CONTROL_LAYOUT`): for each accelerator, its toggle, then its
parameters. A preset fills the controls from its spec; the controls build the spec that runs.
The page groups the toggles by what the accelerators do (`CONTROL_GROUPS`, derived from the slots
they take over) and starts on the model's `balanced` preset (`start_preset`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from genaccel.accelerators import ACCELERATORS
from genaccel.accelerators.base import (
    SLOT_ATTENTION_KERNEL,
    SLOT_ATTENTION_OUTPUT,
    SLOT_CFG,
    SLOT_COMPILE,
    SLOT_KV_CACHE,
    SLOT_MODULE_OUTPUT,
    SLOT_PASS,
    SLOT_QUANT,
    SLOT_TOKENS,
)
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


# The page's groups of accelerators, by the slots they take over, in the order shown. An accelerator joins the
# group of its first slot in `_PRECEDENCE`: FasterCache (attention outputs and the CFG branch) reuses attention,
# as the README's stacking table has it. An accelerator that takes no slot stacks with every other one by
# design, to save memory (LightCache): it is with the systems.
SLOT_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Skip passes", frozenset({SLOT_PASS, SLOT_CFG})),
    ("Reuse attention", frozenset({SLOT_ATTENTION_OUTPUT, SLOT_MODULE_OUTPUT})),
    ("Sparse attention", frozenset({SLOT_ATTENTION_KERNEL})),
    ("Merge tokens", frozenset({SLOT_TOKENS})),
    ("Memory / systems", frozenset({SLOT_COMPILE, SLOT_QUANT, SLOT_KV_CACHE})),
)
NO_SLOT_GROUP = "Memory / systems"
_PRECEDENCE = ("Reuse attention", "Skip passes", "Sparse attention", "Merge tokens", "Memory / systems")


def group_of(name: str) -> str:
    """The page's group of an accelerator (`SLOT_GROUPS`); ValueError for a slot no group holds, so that a
    new kind of accelerator gets a place on the page before it ships."""
    slots = ACCELERATORS[name].slots
    if not slots:
        return NO_SLOT_GROUP
    held_by = dict(SLOT_GROUPS)
    for title in _PRECEDENCE:
        if slots & held_by[title]:
            return title
    raise ValueError(f"accelerator {name} takes slots {sorted(slots)} that no group of the page holds")


def _grouped() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {title: [] for title, _ in SLOT_GROUPS}
    for name in CONTROL_LAYOUT:
        groups[group_of(name)].append(name)
    return {title: names for title, names in groups.items() if names}


# Group title -> the accelerators it shows, in CONTROL_LAYOUT's order (the flat values keep that order).
CONTROL_GROUPS: dict[str, list[str]] = _grouped()

# The preset the page starts on, so that a visitor's first video is accelerated; "none" for a model without it.
START_PRESET = "balanced"


def start_preset(presets) -> str:
    """The preset the page starts on among a model's preset names: `balanced`, else "none"."""
    return START_PRESET if START_PRESET in presets else "none"


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
