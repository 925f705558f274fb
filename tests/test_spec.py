"""Spec parsing and validation: strings, files, presets, and the one-line errors."""

import json

import pytest

from genaccel.errors import SpecError
from genaccel.generation.spec import AccelRequest, check_spec, format_spec, parse_spec, parse_spec_string, resolve
from genaccel.pipelines.families import FAMILIES

WAN = FAMILIES["wan"]


def test_parse_names_params_and_round_trip():
    reqs = parse_spec_string("teacache(threshold=0.1, coefficients=[1;2;3;4;5])+pab(spatial=3,window=100:700)+fbcache")
    assert [r.name for r in reqs] == ["teacache", "pab", "fbcache"]
    assert reqs[0].params == {"threshold": 0.1, "coefficients": "[1;2;3;4;5]"}
    assert reqs[1].params == {"spatial": 3, "window": (100, 700)}
    assert parse_spec_string(format_spec(reqs)) == reqs
    assert parse_spec_string("none") == [] and format_spec([]) == "none"


def test_resolve_builds_typed_configs():
    (cls, cfg), (cls2, cfg2) = resolve(parse_spec_string("teacache(threshold=1)+pab(window=0:900)"), WAN)
    assert cls.name == "teacache" and cfg.threshold == 1.0 and isinstance(cfg.threshold, float)
    assert cfg2.window == (0, 900) and cfg2.spatial == 2


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty accelerator spec"),
        ("bogus", "unknown accelerator 'bogus'"),
        ("teacache(foo=1)", "unknown parameter 'foo' for teacache"),
        ("teacache(threshold=abc)", "bad value 'abc' for teacache.threshold"),
        ("teacache(threshold=-1)", "threshold must be >= 0"),
        ("pab(spatial=1.5)", "bad value '1.5' for pab.spatial"),
        ("pab(window=5)", "expected low:high"),
        ("teacache(threshold=0.1", "unbalanced '('"),
        ("teacache(threshold)", "expected key=value"),
        ("teacache(threshold=1,threshold=2)", "given twice"),
        ("teacache+fbcache", "cannot stack"),
        ("pab+taylorseer", "cannot stack"),
        ("fastercache", "does not support Wan"),
        ("tea cache", "malformed accelerator"),
        ("tome(ffn=1)", "bad value '1' for tome.ffn (expected true or false)"),
        ("tome(ratio=0.9)", "ratio must be in [0, 0.875]"),
        ("tome(schedule=calibrated)", "schedule must be one of uniform, profile"),
        ("tome+svg", "sparse attention needs the full token grid"),
        ("tome+asymrnr", "cannot stack"),
    ],
)
def test_errors_are_one_line_and_specific(spec, message):
    with pytest.raises(SpecError) as info:
        resolve(parse_spec(spec, WAN), WAN)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_check_spec_before_loading_a_model():
    check_spec("teacache+pab")
    check_spec("balanced")
    with pytest.raises(SpecError):
        check_spec("teacache+magcache")


def test_spec_files_toml_and_json(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text("[teacache]\nthreshold = 0.2\n[pab]\nspatial = 3\nwindow = [100, 600]\n")
    js = tmp_path / "s.json"
    js.write_text(
        json.dumps([{"name": "teacache", "threshold": 0.2}, {"name": "pab", "spatial": 3, "window": [100, 600]}])
    )
    for path in (toml, js):
        resolved = resolve(parse_spec(str(path), WAN), WAN)
        assert [c.name for c, _ in resolved] == ["teacache", "pab"]
        assert resolved[0][1].threshold == 0.2 and resolved[1][1].window == (100, 600)
    with pytest.raises(SpecError, match="spec file not found"):
        parse_spec(str(tmp_path / "missing.toml"), WAN)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(SpecError, match="cannot read spec file"):
        parse_spec(str(bad), WAN)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("preset", ["quality", "balanced", "fast"])
def test_every_family_has_valid_presets(family, preset):
    adapter = FAMILIES[family]
    requests = parse_spec(preset, adapter)
    assert requests, f"{family} {preset} is empty"
    resolve(requests, adapter)  # supported and stackable


def test_accel_request_str():
    assert str(AccelRequest("pab", {"window": (1, 2), "spatial": 2})) == "pab(window=1:2,spatial=2)"


def test_a_preset_can_stand_in_a_stack():
    from genaccel.generation.spec import resolve_spec

    wan = FAMILIES["wan"]
    assert (
        resolve_spec("balanced+sta(density=0.3)", wan).text
        == "teacache(threshold=0.08)+pab(spatial=2,cross=4)+sta(density=0.3)"
    )
    check_spec("balanced+sta")  # the preset part waits for the model; the rest is checked now
    with pytest.raises(SpecError, match="unknown accelerator 'foo'"):
        check_spec("balanced+foo")
    with pytest.raises(SpecError, match="cannot stack"):
        resolve_spec("balanced+magcache", wan)
