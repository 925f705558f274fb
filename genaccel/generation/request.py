"""The generation request: one type, in diffusers' argument names, built from options in one place.

Every entry point (the CLI, batch JSONL lines, the web UI, the bench) describes a generation as a
`GenerationRequest` made by `request_from_options`, which accepts the field names and the short
aliases of `ALIASES` (`frames`, `steps`, `guidance`, `negative`) and runs every check that needs no
model. The checks that need the model (frame rules, settings, presets) run once, in
`genaccel.generation.prepare.prepare`. The CLI's options are generated from the fields below.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from genaccel.attention.backends import BACKENDS
from genaccel.errors import InputError
from genaccel.pipelines.shapes import EXAMPLE_PROMPT  # noqa: F401 - the entry points' example prompt


def _field(
    default,
    help: str,
    *,
    alias: str | None = None,
    low=None,
    high=None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
):
    return field(
        default=default,
        metadata={"help": help, "alias": alias, "low": low, "high": high, "metavar": metavar, "choices": choices},
    )


# Where the weights live during a run (diffusers' offloading): "none" keeps every component on the device,
# "model" moves each component there while it runs, "group" one transformer block at a time, "sequential"
# one layer at a time (least memory, slowest).
OFFLOAD_MODES = ("none", "model", "group", "sequential")


@dataclass
class GenerationRequest:
    """What to generate. None means "the model's default" (for `accel`: keep what is applied)."""

    prompt: str = _field("", "the text prompt")
    negative_prompt: str = _field("", "negative prompt", alias="negative", metavar="TEXT")
    num_frames: int | None = _field(
        None, "frame count (default: the model's; Wan needs 4k+1)", alias="frames", low=1, high=1024
    )
    height: int | None = _field(None, "frame height in pixels (default: the model's)", low=8, high=4096)
    width: int | None = _field(None, "frame width in pixels (default: the model's)", low=8, high=4096)
    num_inference_steps: int | None = _field(
        None, "denoising steps (default: the model's)", alias="steps", low=1, high=1000
    )
    guidance_scale: float | None = _field(
        None, "classifier-free guidance scale (default: the model's)", alias="guidance", low=0.0, high=50.0
    )
    seed: int = _field(0, "random seed", low=0, high=2**32 - 1)
    setting: str = _field(
        "default",
        "named defaults of the model: default, or long (the embedded model's benchmark "
        "setting: more and larger frames); explicit sizes, frames and steps override it",
    )
    accel: str | None = _field(
        None,
        "accelerators: 'none', a preset (quality, balanced, fast), a spec such as "
        "'teacache(threshold=0.1)+pab(spatial=2)', or a .toml/.json spec file",
        metavar="SPEC|PRESET",
    )
    attention: str = _field(
        "native",
        "attention backend, through diffusers' attention dispatch: native (torch SDPA), flex, flash, "
        "flash_varlen, sage, sage_varlen, xformers; `genaccel list` shows which run here (sparse kernels keep "
        "their own)",
        choices=tuple(BACKENDS),
        metavar="BACKEND",
    )
    decoder: str = _field(
        "full",
        "how latents become frames: full (the model's VAE), light (the light decoder the model ships: several "
        "times faster, a little less faithful), or light:PATH (TAEHV weights, .safetensors or .pth)",
        metavar="full|light|light:PATH",
    )
    offload: str | None = _field(
        None,
        "where the weights wait while another component runs: none (all on the device), "
        "model (one component at a time), group (one transformer block at a time), "
        "sequential (one layer at a time: least memory, slowest) (default: none)",
        choices=OFFLOAD_MODES,
        metavar="MODE",
    )
    vae_tiling: bool | None = _field(
        None, "decode the video in overlapping tiles: less memory for large frames, seams possible (default: off)"
    )
    max_memory: str | None = _field(
        None,
        "memory this run may use on the device, e.g. 20GB (default: what the device "
        "has free); a run estimated above it is refused with the option that would fit",
        metavar="SIZE",
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(GenerationRequest)}
_HINTS = typing.get_type_hints(GenerationRequest)
# Short names accepted by the CLI, batch JSONL and the UI, mapped to the field names.
ALIASES: dict[str, str] = {f.metadata["alias"]: name for name, f in FIELDS.items() if f.metadata["alias"]}


# Fields that decide how a run uses memory, not what it makes: a video made under one value is the video asked for
# under another (vae_tiling does change pixels at tile seams, so it is not here).
MEMORY_ONLY = ("offload", "max_memory")
MEMORY_FIELDS = ("offload", "vae_tiling", "max_memory")  # the memory options of a request


def option_name(name: str) -> str:
    """The short name of a field where it has one (`num_frames` -> `frames`), else its name with dashes
    (`vae_tiling` -> `vae-tiling`); options are accepted under either spelling."""
    return FIELDS[name].metadata["alias"] or name.replace("_", "-")


def field_kind(name: str) -> type:
    """int, float or str: the value type of a field (None aside)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def field_limits(name: str) -> tuple[Any, Any]:
    meta = FIELDS[name].metadata
    return meta["low"], meta["high"]


# Longest prompt accepted (characters). Text encoders read a few hundred tokens (Wan: 512); `prepare` warns
# when one truncates. Beyond this the text is not a prompt (a file pasted by mistake).
MAX_PROMPT_CHARS = 10_000


def _show(value: Any) -> str:
    """A value as an error message shows it: short, on one line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a {'negative ' if value < 0 else ''}number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(name: str, value: Any, label: str, typed: bool = False) -> Any:
    """One option value converted to its field's type and range-checked. `typed`: the value comes from a
    typed source (a JSON line), so it must already have the field's type; text is converted only when
    it comes from a command line or a form."""
    kind = field_kind(name)
    if typed and value is not None:
        _check_json_type(name, kind, value, label)
    if kind is bool:
        return _boolean(value, label)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"{label} must be text; got {_show(value)}")
        if name in ("prompt", "negative_prompt"):
            check_text(value, label)
        choices = FIELDS[name].metadata["choices"]
        if choices and value.strip().lower() not in choices:
            raise InputError(f"{label} must be one of {', '.join(choices)}; got {_show(value)}")
        if name == "max_memory":
            parse_size(value, label)
        if name == "decoder":
            return _decoder(value, label)
        return (
            value.strip().lower() if choices else value.strip() if name in ("setting", "accel", "max_memory") else value
        )
    if isinstance(value, bool):
        raise InputError(f"{label} must be a number; got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value.strip())
        except ValueError:
            expected = "a number" if kind is float else "a whole number"
            raise InputError(f"{label} must be {expected}; got {_show(value)}") from None
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise InputError(f"{label} must be a finite number; got {_show(value)}")
    low, high = field_limits(name)
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InputError(f"{label} must be a whole number; got {value}")
        value = int(value)
    elif isinstance(value, int) and not -(2**64) < value < 2**64:  # no float holds it exactly; none is in range
        raise InputError(f"{label} must be between {low} and {high}; got {_show(value)}")
    else:
        value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{label} must be between {low} and {high}; got {_show(value)}")
    return value


def _decoder(value: str, label: str) -> str:
    """full, light, or light:PATH, normalised. The file is not looked at here: `prepare.complete` checks it,
    before a model loads, and a server that takes requests from others refuses the PATH form first."""
    from genaccel.decoding.light import parse_decoder

    text = value.strip()
    kind, colon, path = text.partition(":")
    text = f"{kind.lower()}{colon}{path.strip()}"
    try:
        parse_decoder(text)
    except ValueError as exc:
        raise InputError(f"{label} {exc}; got {_show(value)}") from None
    return text


_JSON_KINDS = {
    bool: ("true or false", (bool,)),
    str: ("text", (str,)),
    int: ("a whole number", (int, float)),
    float: ("a number", (int, float)),
}


def _check_json_type(name: str, kind: type, value: Any, label: str) -> None:
    """A typed value must have its field's JSON type: "12" is not a number there, 1 is not true (finite and
    whole numbers are `_convert`'s checks, as for every source)."""
    expected, types = _JSON_KINDS[kind]
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, types):
        raise InputError(f"{label} must be {expected}; got {type(value).__name__} {_show(value)}")


# C0 controls but tab and line breaks, DEL and C1 controls, lone surrogates (not text: no encoder takes them).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(text: str, label: str) -> None:
    """A prompt is printable text: no NUL or other control characters (tabs and line breaks aside), not
    longer than MAX_PROMPT_CHARS."""
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"{label} is {len(text)} characters long; at most {MAX_PROMPT_CHARS} are accepted")
    bad = _CONTROL.search(text)
    if bad:
        raise InputError(f"{label} holds the control character U+{ord(bad.group()):04X} at position {bad.start() + 1}")


def nearest_name(word: str, names) -> str:
    """' (did you mean 'x'?)' for the name closest to a mistyped `word`, or ''."""
    import difflib

    close = difflib.get_close_matches(str(word).replace("-", "_").lower(), [n.replace("-", "_") for n in names], 1, 0.6)
    if not close:
        return ""
    return f" (did you mean '{next(n for n in names if n.replace('-', '_') == close[0])}'?)"


def _boolean(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else value if value in (0, 1) else None
    if text in ("1", "true", "yes", "on", 1):
        return True
    if text in ("0", "false", "no", "off", 0):
        return False
    raise InputError(f"{label} must be true or false; got {_show(value)}")


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str, label: str = "size") -> int:
    """Bytes from a size such as "24GB", "512 MiB" or "1e9"; raises InputError naming `label`."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS or not 0 < float(match.group(1)) * _UNITS[match.group(2)] < 1e18:
        raise InputError(f"{label} must be a size such as 24GB or 512MB; got {_show(text)}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def request_from_options(
    options: Mapping[str, Any],
    base: GenerationRequest | None = None,
    *,
    source: str = "",
    ignore: tuple[str, ...] = (),
    partial: bool = False,
    option_prefix: str = "",
    typed: bool = False,
) -> GenerationRequest:
    """A request from `options` (field names or aliases) over `base`, checked as far as no model is needed.

    Options whose value is None leave `base` as it is. `source` prefixes error messages (e.g.
    "prompts.jsonl:3: "); keys in `ignore` are skipped (e.g. a batch line's "name"); `partial`
    builds a base for other requests, whose prompt may be empty; `option_prefix` is how messages
    write an option's name ("--" on the command line); `typed` says the values come from JSON and
    must have their fields' types already (no "12" for 12). Raises InputError naming the option.
    """
    from genaccel.errors import SpecError
    from genaccel.generation.spec import check_spec

    values = (base or GenerationRequest()).to_dict()
    given = set()
    for key, value in options.items():
        if key in ignore:
            continue
        name = ALIASES.get(key, key.replace("-", "_") if isinstance(key, str) else key)
        if name not in FIELDS:
            known = sorted({option_name(n) for n in FIELDS} | set(FIELDS) | set(ignore))
            hint = nearest_name(key, known)
            allowed = ", ".join(sorted(option_name(n) for n in FIELDS) + list(ignore))
            raise InputError(f"{source}unknown option {_show(key)}{hint or f' (allowed: {allowed})'}")
        if name in given:
            raise InputError(f"{source}option '{option_name(name)}' given twice")
        given.add(name)
        if value is None:
            continue
        values[name] = _convert(name, value, f"{source}{option_prefix}{option_name(name)}", typed)
    values["prompt"] = values["prompt"].strip()
    if not values["prompt"] and not partial:
        raise InputError(f"{source}the prompt is empty")
    if values["accel"] is not None:
        values["accel"] = values["accel"].strip() or "none"
        try:
            check_spec(values["accel"])
        except SpecError as exc:
            raise SpecError(f"{source}{exc}") from None
    return GenerationRequest(**values)


# A configuration, as `genaccel bench --accel` and `genaccel tune` name one: a spec, optionally followed by the
# request fields that vary with it, after semicolons ("balanced; decoder=light"). Only these fields may.
CONFIGURATION_FIELDS = ("decoder",)


def split_configuration(text: str) -> tuple[str, dict[str, str]]:
    """("balanced", {"decoder": "light"}) from "balanced; decoder=light"; InputError naming a bad part."""
    spec, *parts = [part.strip() for part in str(text).split(";")]
    overrides: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in CONFIGURATION_FIELDS:
            raise InputError(
                f"configuration {_show(text)}: after the spec, only {', '.join(CONFIGURATION_FIELDS)}=VALUE "
                f"may follow a ';' (got {_show(part)})"
            )
        if key in overrides:
            raise InputError(f"configuration {_show(text)}: {key} given twice")
        overrides[key] = _convert(key, value.strip(), f"configuration {_show(text)}: {key}")
    return spec or "none", overrides
