"""Property tests (hypothesis) of the parsers of user input: accelerator specs, request options, batch lines.

Whatever the input, a parser returns its value or raises a `GenAccelError` whose message is one non-empty
line: never another exception (ValueError, OverflowError, RecursionError, TypeError...). A parsed spec
printed back with `format_spec` parses to the same spec. Runs are derandomized, so CI sees the same examples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from genaccel.accelerators import ACCELERATORS
from genaccel.errors import GenAccelError
from genaccel.generation.batch import BatchItem, parse_items
from genaccel.generation.request import (
    ALIASES,
    FIELDS,
    GenerationRequest,
    field_kind,
    field_limits,
    request_from_options,
)
from genaccel.generation.spec import AccelRequest, check_spec, format_spec, parse_spec, parse_spec_string, resolve
from genaccel.pipelines.families import FAMILIES

WAN = FAMILIES["wan"]


def fuzz(max_examples: int, **kwargs):
    """Deterministic settings, no example database: the same examples on every run and machine."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, **kwargs)


def check_message(exc: BaseException) -> None:
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    assert message.splitlines() == [message], f"{type(exc).__name__} message is not one line: {message!r}"


def check_file_message(exc: BaseException) -> None:
    """A batch file's errors: one complete line per bad line of the file, each naming its line."""
    lines = str(exc).splitlines()
    assert lines and all(line.strip() for line in lines), f"{type(exc).__name__} with an empty line: {exc!s:.200}"
    if len(lines) > 1:
        assert all(line.startswith("prompts:") for line in lines if not line.startswith("... and ")), lines


def outcome(fn, *args, check=check_message, **kwargs):
    """fn's result, or None once the GenAccelError it raised is checked; any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except GenAccelError as exc:
        check(exc)
        return None


def canonical(requests: list[AccelRequest]):
    """Requests as comparable data that tells 1 from True from 1.0 and matches NaN with NaN."""

    def value(v):
        if isinstance(v, tuple):
            return ("tuple", tuple(value(x) for x in v))
        if isinstance(v, float) and math.isnan(v):
            return ("float", "nan")
        return (type(v).__name__, v)

    return [(r.name, [(k, value(v)) for k, v in r.params.items()]) for r in requests]


def big_ints(max_digits: int = 5000):
    """Integers beyond 64 bits, up to `max_digits` digits (past 4300, str() and repr() of them raise ValueError).
    Built by map: a strategy holding them would fail to print itself."""
    sizes = [size for size in (63, 64, 400, 5000) if size <= max_digits]
    return st.tuples(st.sampled_from(sizes), st.sampled_from([1, -1])).map(
        lambda t: t[1] * (2 ** t[0] + 1 if t[0] < 100 else 10 ** t[0])
    )


# ------------------------------------------------------------------ strategies: spec text
HUGE_NUMBERS = [
    "1e999",
    "-1e999",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "9" * 5000,
    "1e-999",
    "nan",
    "-inf",
    "Infinity",
    "1_000",
    "0x10",
    "١٢",
    "+5",
    "-0",
    "0.1",
    "2",
    "true",
    "False",
]
PARAM_NAMES = sorted({f.name for cls in ACCELERATORS.values() for f in dataclasses.fields(cls.config_class)})
SPEC_FRAGMENTS = [
    *ACCELERATORS,
    *PARAM_NAMES,
    *HUGE_NUMBERS,
    "none",
    "NONE",
    "quality",
    "balanced",
    "fast",
    "Balanced",
    "(",
    ")",
    "[",
    "]",
    "=",
    ",",
    "+",
    ":",
    ";",
    "'",
    '"',
    " ",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\x1c",
    "\x85",
    "\u2028",
    "\u3000",
    "İ",
    "ß",
    "é",
    "K",
    "-",
    "_",
    "#",
    "~",
    "~nosuchuser",
    ".toml",
    ".json",
    ".TOML",
    "[1;2;3;4;5]",
]
fragment_text = st.lists(st.sampled_from(SPEC_FRAGMENTS), max_size=14).map("".join)
syntax_text = st.text(alphabet="()[]=,+:;'\" \n\x00aA_-1.eİ~", max_size=24)
value_text = st.one_of(
    st.sampled_from(HUGE_NUMBERS), fragment_text, st.text(max_size=8), st.integers().map(str), st.floats().map(str)
)


@st.composite
def spec_like(draw) -> str:
    """Text shaped like a spec, `name(key=value,...)+...`, with names, keys and values that may be anything."""
    items = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(
            st.one_of(st.sampled_from(sorted(ACCELERATORS)), st.sampled_from(SPEC_FRAGMENTS), st.text(max_size=6))
        )
        keys = st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=6))
        pairs = draw(st.lists(st.tuples(keys, value_text), max_size=4))
        body = ",".join(f"{k}={v}" for k, v in pairs)
        items.append(f"{name}({body})" if pairs or draw(st.booleans()) else name)
    return draw(st.sampled_from(["+", " + ", "+\n"])).join(items)


# A value written in a spec that reads back as itself: no ',' ':' or brackets (they are syntax), and any text,
# including text that reads as a number or a flag when unquoted ('1', 'true', 'nan', ' padded ').
plain_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",:()[]'\""), max_size=10
)
text_value = st.one_of(
    plain_text,
    st.sampled_from(
        ["1", "true", "nan", "inf", "1e999", " padded ", "[1;2;3;4;5]", "auto", "a=b", "a+b", "a'b", "", " "]
    ),
)


def value_of(hint):
    """A strategy of the values a config field of type `hint` takes in a spec."""
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.one_of(st.integers(), big_ints(4300))
    if hint is float:
        return st.floats()
    if hint is str:
        return text_value
    if typing.get_origin(hint) is tuple:
        return st.tuples(*(value_of(arg) for arg in typing.get_args(hint)))
    raise AssertionError(f"no strategy for config fields of type {hint}")


@st.composite
def accel_request(draw) -> AccelRequest:
    """One request for a real accelerator with some of its real parameters, of their types."""
    name = draw(st.sampled_from(sorted(ACCELERATORS)))
    config = ACCELERATORS[name].config_class
    hints = typing.get_type_hints(config)
    keys = draw(st.lists(st.sampled_from([f.name for f in dataclasses.fields(config)]), unique=True))
    return AccelRequest(name, {key: draw(value_of(hints[key])) for key in keys})


stacks = st.lists(accel_request(), max_size=4)
spec_text = st.one_of(st.text(), syntax_text, fragment_text, spec_like(), stacks.map(format_spec))


# ------------------------------------------------------------------ specs
@fuzz(300)
@given(spec_text)
@example("(" * 5000 + ")" * 5000)
@example("teacache(" * 3000 + ")" * 3000)
@example("teacache(threshold=" + "1" * 400 + ")")
@example("a\nb")
@example("none()")
@example("aİ")
@example("x(k='1')")
@example("~nosuchuser.toml")
@example("~a\x00.toml")
@example("0" * 300 + ".toml")
@example("balanced+")
def test_any_spec_text_parses_or_fails_with_one_line(text):
    for parse in (parse_spec_string, parse_spec, check_spec):
        outcome(parse, text)
    outcome(parse_spec, text, WAN)


@fuzz(150)
@given(spec_text)
@example("balanced+")
@example("balanced++")
def test_what_check_spec_accepts_parses_with_a_model(text):
    """check_spec is the check made before a model is loaded: what it accepts must parse once the model is known."""
    try:
        check_spec(text)
    except GenAccelError as exc:
        check_message(exc)
        return
    parse_spec(text, WAN)  # any error here fails the test: check_spec let through what cannot run


@fuzz(200)
@given(spec_text)
@example("x(k='1')")
@example("x(k=' a ')")
@example('x(k="true",j="nan")')
@example("x(k='1':2)")
@example("none()")
@example("none+teacache")
@example("aİ")
def test_a_parsed_spec_prints_back_to_itself(text):
    requests = outcome(parse_spec_string, text)
    if requests is None:
        return
    printed = format_spec(requests)
    again = parse_spec_string(printed)  # any error here fails the test: printed specs must parse
    assert canonical(again) == canonical(requests), printed
    assert format_spec(again) == printed


@fuzz(150)
@given(stacks)
def test_specs_of_real_accelerators_round_trip(requests):
    printed = format_spec(requests)
    assert canonical(parse_spec_string(printed)) == canonical(requests), printed
    assert canonical(parse_spec(printed)) == canonical(requests), printed
    outcome(check_spec, printed)  # values may be out of range or not stack: a one-line error then


@fuzz(100)
@given(stacks)
@example([AccelRequest("teacache", {"threshold": float("nan")})])
@example([AccelRequest("magcache", {"threshold": float("inf")})])
@example([AccelRequest("fbcache", {"threshold": 10**400})])
def test_accepted_specs_hold_finite_numbers(requests):
    """A spec that passes the checks builds configs whose numbers are finite (no NaN threshold, no infinite ratio)."""
    resolved = outcome(resolve, requests, None)
    for _, config in resolved or ():
        for value in dataclasses.astuple(config):
            for number in value if isinstance(value, tuple) else (value,):
                if isinstance(number, float):
                    assert math.isfinite(number), config


# ------------------------------------------------------------------ spec files
def _json_value(max_leaves=8):
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        big_ints(4300),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(sorted(ACCELERATORS)),
    )
    keys = st.one_of(st.sampled_from([*ACCELERATORS, *PARAM_NAMES, "name", "accelerators"]), st.text(max_size=6))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


toml_value = st.sampled_from(
    [
        "0.2",
        "1e999",
        "inf",
        "nan",
        "-1",
        "[1, 2]",
        "[100, 600]",
        "'a'",
        '"x\\ny"',
        "true",
        "1" * 5000,
        "[" * 2000 + "]" * 2000,
        "{a = 1}",
        "[[1], 2]",
        "2024-01-01",
        "0x10",
    ]
)


@st.composite
def toml_text(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.one_of(st.sampled_from(sorted(ACCELERATORS)), st.just("accelerators"), st.text(max_size=5)))
        if draw(st.booleans()):
            lines.append(f"{json.dumps(table)} = {draw(toml_value)}")
            continue
        lines.append(f"[{json.dumps(table)}]")
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.one_of(st.sampled_from(PARAM_NAMES), st.just("name"), st.text(max_size=5)))
            lines.append(f"{json.dumps(key)} = {draw(toml_value)}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-specs")


@fuzz(150)
@given(
    suffix=st.sampled_from([".json", ".toml"]),
    content=st.one_of(_json_value().map(json.dumps), toml_text(), st.text(), fragment_text),
)
@example(suffix=".json", content="[" * 100000)
@example(suffix=".toml", content="a = " + "[" * 100000)
@example(suffix=".json", content="1" * 5000)
@example(suffix=".json", content='{"teacache": 5}')
@example(suffix=".toml", content="teacache = [1]")
@example(suffix=".json", content='[{"name": "a\\nb"}]')
@example(suffix=".json", content='{"teacache": {"threshold": 1e400}}')
@example(suffix=".json", content='{"teacache": {"threshold": ' + "1" * 400 + "}}")
def test_any_spec_file_parses_or_fails_with_one_line(spec_dir, suffix, content):
    path = spec_dir / f"spec{suffix}"
    path.write_text(content)
    requests = outcome(parse_spec, str(path))
    outcome(check_spec, str(path))
    if requests is not None:
        outcome(resolve, requests, WAN)


# ------------------------------------------------------------------ request options
OPTION_TEXT = [
    "",
    " ",
    "1e999",
    "nan",
    "inf",
    "-1",
    "12",
    " 12 ",
    "1" * 5000,
    "24GB",
    "512 MiB",
    "0.0000001",
    "1e9",
    "none",
    "Group",
    "sequential",
    "true",
    "off",
    "yes",
    "teacache(threshold=0.1)+pab",
    "balanced",
    "balanced+",
    "bogus",
    "a\nb",
    "\x00",
    "\u2028",
    "~nosuchuser.toml",
    "1_0",
    "١٢",
]
OPTION_KEYS = sorted({*FIELDS, *ALIASES, *(name.replace("_", "-") for name in FIELDS), "name"})
scalar_option = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(OPTION_TEXT),
    spec_like(),
)
# One level of nesting is enough to reach the type checks, and keeps drawing cheap.
option_value = st.one_of(
    scalar_option, st.lists(scalar_option, max_size=2), st.dictionaries(st.text(max_size=3), scalar_option, max_size=2)
)


def near_valid(name: str):
    """Values of field `name` around what it accepts: its limits, numbers as text, its choices, specs."""
    kind, (low, high) = field_kind(name), field_limits(name)
    if kind is bool:
        return st.one_of(st.booleans(), st.sampled_from(["yes", "off", "1", "maybe"]))
    if kind in (int, float):
        lo, hi = (-10 if low is None else low - 1), (10**6 if high is None else high + 1)
        numbers = st.integers(lo, hi) if kind is int else st.floats(lo, hi)
        return st.one_of(numbers, numbers.map(str), st.sampled_from([low, high, 1e999, float("nan")]))
    near = {
        "max_memory": ["24GB", "512 MiB", "1e9", "0.5 GiB", "1e999", "0", "-1GB"],
        "setting": ["default", "long"],
        "accel": ["none", "balanced", "teacache(threshold=0.1)+pab(spatial=3)", "teacache+fbcache", "", "x.toml"],
    }
    texts = [*(FIELDS[name].metadata["choices"] or ()), *near.get(name, ["", "blurry"]), " padded "]
    return st.one_of(st.sampled_from(texts), spec_like() if name == "accel" else st.text(max_size=6))


options = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(OPTION_KEYS), st.text(max_size=10)), option_value, max_size=6),
    # the known options only, with a prompt, so that most examples get to the later checks
    st.fixed_dictionaries(
        {"prompt": st.text(min_size=1)}, optional={key: option_value for key in OPTION_KEYS if key != "prompt"}
    ),
    # values near the accepted ones: requests come back, and their fields are checked
    st.fixed_dictionaries(
        {"prompt": st.one_of(st.sampled_from(["a cat", " a dog ", "a\tcat"]), st.text(min_size=1))},
        optional={name: near_valid(name) for name in FIELDS if name != "prompt"},
    ),
)


@fuzz(250)
@given(options, st.booleans())
@example({"prompt": "a", "guidance": 10**400}, False)
@example({"prompt": "a", "seed": 10**400}, False)
@example({"prompt": "a", "max_memory": "1e999"}, False)
@example({"prompt": 10**5000}, False)
@example({"prompt": "a", "vae_tiling": 10**5000}, False)
@example({"prompt": "a", "a\nb": 1}, False)
@example({"prompt": "a", "offload": "a\nb"}, False)
@example({"prompt": "a", "steps": "a\nb"}, False)
@example({"prompt": "a", "max_memory": "a\nb"}, False)
@example({"prompt": "a", "accel": "a\nb"}, False)
def test_any_options_make_a_request_or_fail_with_one_line(options, partial):
    request = outcome(request_from_options, options, partial=partial)
    if request is None:
        return
    assert isinstance(request, GenerationRequest)
    for name in FIELDS:  # every check that needs no model has run: types and ranges hold
        value, kind = getattr(request, name), field_kind(name)
        if value is None:
            continue
        assert type(value) is kind, (name, value)
        low, high = field_limits(name)
        if kind in (int, float):
            assert math.isfinite(value), (name, value)
            assert (low is None or value >= low) and (high is None or value <= high), (name, value)
    assert partial or request.prompt.strip()


# ------------------------------------------------------------------ batch files
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints(4300),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(OPTION_TEXT),
)
json_safe_value = st.one_of(
    json_scalar, st.lists(json_scalar, max_size=2), st.dictionaries(st.text(max_size=3), json_scalar, max_size=2)
)
item_names = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    json_safe_value,
    st.sampled_from(
        [
            "../up",
            "a/b",
            "a\\b",
            ".",
            "..",
            ".hidden",
            "x.mp4",
            "manifest.jsonl",
            "videos.zip",
            "0000",
            "0001",
            "-",
            "",
            "con",
            "a" * 200,
        ]
    ),
)
prompts = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["a cat", "A cat", "a/cat", "a.cat", " ", "#x"]))


@st.composite
def jsonl_line(draw) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:  # an item: a prompt, perhaps a name, perhaps request options
        item = {"prompt": draw(prompts)}
        if draw(st.booleans()):
            item["name"] = draw(item_names)
        item.update(draw(st.dictionaries(st.sampled_from(OPTION_KEYS), json_safe_value, max_size=3)))
        return json.dumps(item, ensure_ascii=draw(st.booleans()))
    if kind == 1:
        return json.dumps(draw(json_safe_value))
    if kind == 2:
        return draw(
            st.sampled_from(
                [
                    "",
                    "   ",
                    "# a comment",
                    "{",
                    "[" * 3000,
                    "1" * 5000,
                    '{"prompt": 1}',
                    '{"prompt": "a", "steps": NaN}',
                    '{"prompt": "a", "name": ' + "9" * 5000 + "}",
                ]
            )
        )
    return draw(st.text(max_size=20))


line_breaks = st.sampled_from(["\n", "\r\n", "\r", "\x1c", "\x85", "\u2028"])
jsonl_text = st.lists(st.tuples(jsonl_line(), line_breaks), max_size=6).map(lambda ls: "".join(a + b for a, b in ls))
txt_text = st.one_of(
    st.text(), st.lists(st.tuples(prompts, line_breaks), max_size=8).map(lambda ls: "".join(a + b for a, b in ls))
)


def check_items(items):
    assert items and all(isinstance(item, BatchItem) for item in items)
    assert [item.index for item in items] == list(range(len(items)))
    names = [item.name for item in items]
    assert len(set(names)) == len(names), names
    for name in names:
        assert name and not any(ch in name for ch in "/\\."), name


@fuzz(200)
@given(st.one_of(jsonl_text, st.text()))
@example("[" * 100000)
@example("1" * 5000)
@example('{"prompt": "a", "name": "../../etc"}\n{"prompt": "b", "name": "a/b"}')
@example('{"prompt": "a", "a\\nb": 1}')
def test_any_jsonl_batch_parses_or_fails_with_one_line(text):
    items = outcome(parse_items, text, ".jsonl", check=check_file_message)
    if items is not None:
        check_items(items)


@fuzz(150)
@given(txt_text)
@example("a cat\nA cat\na/cat\na.cat")
def test_any_txt_batch_parses_or_fails_with_one_line(text):
    items = outcome(parse_items, text, ".txt", check=check_file_message)
    if items is not None:
        check_items(items)
