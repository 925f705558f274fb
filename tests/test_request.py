"""One request type: built from options in one place, prepared once, the same from every entry point."""

import json

import pytest

from genaccel.errors import InputError, SpecError
from genaccel.generation.batch import parse_items
from genaccel.generation.prepare import prepare
from genaccel.generation.request import ALIASES, FIELDS, GenerationRequest, request_from_options

PROMPT = "a red circle moving left on a black background"


def test_aliases_and_field_names_build_the_same_request():
    short = request_from_options({"prompt": PROMPT, "frames": 5, "steps": 4, "guidance": 3, "negative": "blur"})
    long = request_from_options(
        {"prompt": PROMPT, "num_frames": 5, "num_inference_steps": 4, "guidance_scale": 3.0, "negative_prompt": "blur"}
    )
    assert short == long == GenerationRequest(PROMPT, "blur", 5, None, None, 4, 3.0)
    assert set(ALIASES.values()) <= set(FIELDS)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": PROMPT, "steps": 0}, "steps must be between 1 and 1000; got 0"),
        ({"prompt": PROMPT, "frames": 2.5}, "frames must be a whole number"),
        ({"prompt": PROMPT, "height": "tall"}, "height must be a whole number"),
        ({"prompt": PROMPT, "guidance": float("nan")}, "guidance must be a finite number"),
        ({"prompt": PROMPT, "seed": True}, "seed must be a number"),
        ({"prompt": PROMPT, "seed": -1}, "seed must be between"),
        ({"prompt": PROMPT, "negative": 3}, "negative must be text"),
        ({"prompt": PROMPT, "colour": "red"}, "unknown option 'colour'"),
        ({"prompt": PROMPT, "frames": 5, "num_frames": 9}, "given twice"),
    ],
)
def test_bad_options_are_one_input_error_naming_the_option(options, message):
    with pytest.raises(InputError, match=message):
        request_from_options(options)


def test_a_bad_spec_is_refused_before_any_model():
    with pytest.raises(SpecError, match="unknown accelerator"):
        request_from_options({"prompt": PROMPT, "accel": "nosuch"})
    assert request_from_options({"prompt": PROMPT, "accel": " "}).accel == "none"


def test_every_entry_point_builds_the_same_request():
    from genaccel.cli import GENERATE_OPTIONS, _request_from_args, build_parser
    from genaccel.ui.app import _request

    argv = [
        "generate",
        PROMPT,
        "--frames",
        "5",
        "--steps",
        "4",
        "--guidance",
        "3",
        "--seed",
        "2",
        "--setting",
        "long",
        "--accel",
        "balanced",
        "--negative",
        "blur",
    ]
    from_cli = _request_from_args(build_parser().parse_args(argv), GENERATE_OPTIONS, PROMPT)
    line = {
        "prompt": PROMPT,
        "frames": 5,
        "steps": 4,
        "guidance": 3,
        "seed": 2,
        "setting": "long",
        "accel": "balanced",
        "negative": "blur",
    }
    from_jsonl = parse_items(json.dumps(line), ".jsonl")[0].request
    from_ui = _request(PROMPT, "blur", "long", None, None, 5.0, 4.0, 3.0, 2.0, "balanced")
    assert from_cli == from_jsonl == from_ui


def test_batch_items_override_the_shared_options():
    base = request_from_options({"steps": 7, "accel": "fast", "seed": 1}, partial=True)
    items = parse_items(f'{{"prompt": "{PROMPT}", "seed": 4}}\n{{"prompt": "x", "accel": "none"}}', ".jsonl", base=base)
    assert [(i.request.seed, i.request.num_inference_steps, i.request.accel) for i in items] == [
        (4, 7, "fast"),
        (1, 7, "none"),
    ]
    with pytest.raises(InputError, match=r"p:2: steps must be"):
        parse_items(f'{{"prompt": "{PROMPT}"}}\n{{"prompt": "x", "steps": -1}}', ".jsonl", source="p")


def test_prepare_completes_from_the_setting_and_carries_its_pipeline_arguments(embedded):
    default = prepare(embedded, GenerationRequest(PROMPT))
    long = prepare(embedded, GenerationRequest(PROMPT, setting="long", num_inference_steps=3, accel="balanced"))
    assert (default.request.height, default.request.num_frames) == (64, 17)
    assert (long.request.height, long.request.num_frames, long.request.num_inference_steps) == (128, 33, 3)
    assert long.call["height"] == 128 and long.call["num_frames"] == 33 and long.call["max_sequence_length"] == 16
    from genaccel.models.presets import preset_spec

    # a preset resolved for this model and setting (a 30-step schedule, stretched to the 3 steps asked for)
    assert long.spec.text == preset_spec("wan", "balanced", "tiny", "long") and default.spec is None
    with pytest.raises(InputError, match="no 'huge' setting"):
        prepare(embedded, GenerationRequest(PROMPT, setting="huge"))
