"""Every kind of bad input is refused before work starts: exit status 2, one line per problem naming the
field, the value and what is allowed, no traceback, nothing written.

The tables below are the catalogue docs/reliability.md counts: request fields on the command line, models
and their files, and batch files (whose errors are all listed, one line each).
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from genaccel.cli import main
from genaccel.generation.batch import MAX_REPORTED
from genaccel.generation.request import MAX_PROMPT_CHARS
from genaccel.models.facts import embedded_model_dir

PROMPT = "a red circle moving left on a black background"
TINY = ["--model", "tiny-wan", "--device", "cpu"]


def _refused(capsys, argv, message):
    """main(argv) exits 2 with `message` on the error line(s), and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("genaccel: error: ") for line in lines), err
    assert message in err, err
    assert "Traceback" not in err
    return lines


# ----------------------------------------------------------------------------- request fields (generate)
GENERATE_CASES = [
    # (options, what the message must say)
    (["--height", "100"], "height 100: must be a positive multiple of 16 for Wan"),
    (["--width", "5000"], "--width must be between 8 and 4096; got 5000"),
    (["--frames", "6"], "frames 6: Wan 2.1/2.2 makes frame counts of the form 4k+1 (e.g. 5 or 9)"),
    (["--frames", "0"], "--frames must be between 1 and 1024; got 0"),
    (["--steps", "2.5"], "--steps must be a whole number; got '2.5'"),
    (["--steps", "1" * 30], "--steps must be between 1 and 1000"),
    (["--guidance", "nan"], "--guidance must be a finite number; got nan"),
    (["--guidance", "inf"], "--guidance must be a finite number; got inf"),
    (["--guidance", "1e999"], "--guidance must be a finite number"),
    (["--guidance", "lots"], "--guidance must be a number; got 'lots'"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295; got -1"),
    (["--seed", str(2**64 + 1)], "--seed must be between 0 and 4294967295"),
    (["--seed", "9" * 5000], "--seed must be"),
    (["--negative", "bad\x07bell"], "--negative holds the control character U+0007 at position 4"),
    (["--setting", "huge"], "this model has no 'huge' setting (settings: default)"),
    (["--accel", "teacache(threshold=nan)"], "expected a finite number"),
    (["--accel", "teacache(treshold=0.1)"], "treshold"),
    (["--accel", "teachache"], "unknown accelerator"),
    (["--accel", "missing.toml"], "spec file not found: missing.toml"),
    (["--offload", "disk"], "--offload must be one of none, model, group, sequential; got 'disk'"),
    (["--max-memory", "lots"], "--max-memory must be a size such as 24GB or 512MB; got 'lots'"),
    (["--max-memory", "1MB"], "more than the 1.0 MB it may use"),  # the memory estimate, before allocating
    (["--out", "clip.avi"], "unsupported output format '.avi'"),
    (["--out", "/proc/clip.mp4"], "cannot write to /proc/clip.mp4"),
]


@pytest.mark.parametrize("options, message", GENERATE_CASES, ids=[" ".join(o)[:40] for o, _ in GENERATE_CASES])
def test_a_bad_generate_option_is_refused_in_one_line(tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    lines = _refused(capsys, ["generate", PROMPT, "--out", "x.mp4", *TINY, *options], message)
    assert len(lines) == 1
    assert not any(tmp_path.iterdir())  # nothing written, not even a temporary file


@pytest.mark.parametrize(
    "options, message",
    [
        (["--height", "100"], "height 100: must be a positive multiple of 16 for Wan 2.1/2.2"),
        (["--frames", "6"], "frames 6: Wan 2.1/2.2 makes frame counts of the form 4k+1"),
        (["--setting", "huge"], "this model has no 'huge' setting (settings: default, long)"),
        (["--accel", "teacache+fbcache"], "cannot stack"),
    ],
)
def test_what_the_model_files_tell_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch, options, message):
    """The embedded model (a local folder): family rules and settings come from its configs, not its weights."""
    import genaccel.generation.load

    monkeypatch.setattr(genaccel.generation.load, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["generate", PROMPT, "--out", "x.mp4", *options], message)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT, "steps": 1}) + "\n" + json.dumps({"prompt": PROMPT, "steps": 1}))
    lines = _refused(capsys, ["batch", str(path), "--out", str(tmp_path / "out"), *options], message)
    if options[0] != "--accel":  # (a spec given for every item is refused once, before the file is read)
        assert len(lines) == 2 and "p.jsonl:1: " in lines[0] and "p.jsonl:2: " in lines[1]  # every item, by line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_an_existing_file_is_replaced_only_if_it_is_a_video(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.mp4").write_text("my notes, not a video")
    _refused(
        capsys,
        ["generate", PROMPT, "--out", "notes.mp4", *TINY],
        "notes.mp4 exists and is not a .mp4 video: genaccel replaces only videos",
    )
    assert (tmp_path / "notes.mp4").read_text() == "my notes, not a video"
    for _ in range(2):  # an earlier video at the same path is replaced
        assert main(["generate", PROMPT, "--out", "clip.gif", "--steps", "1", *TINY]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "notes.mp4"]


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "the prompt is empty"),
        (" \t ", "the prompt is empty"),
        ("a\x00b", "prompt holds the control character U+0000 at position 2"),
        ("a\x1b[31mred", "prompt holds the control character U+001B"),
        ("x" * (MAX_PROMPT_CHARS + 1), f"at most {MAX_PROMPT_CHARS} are accepted"),
    ],
)
def test_a_bad_prompt_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, prompt, message):
    import genaccel.generation.load

    monkeypatch.setattr(genaccel.generation.load, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["generate", prompt, "--out", "x.mp4"], message)
    assert not any(tmp_path.iterdir())


def test_a_prompt_longer_than_the_text_encoder_reads_gets_a_notice(tmp_path, embedded):
    from genaccel.generation.prepare import prepare
    from genaccel.generation.request import request_from_options

    short = prepare(embedded, request_from_options({"prompt": PROMPT}))
    long = prepare(embedded, request_from_options({"prompt": PROMPT + " and a small green dot" * 4}))
    assert short.notices == ()
    assert long.notices == ("the prompt is longer than the 16 tokens the text encoder reads; the rest is ignored",)


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_an_error_is_the_only_line_a_user_sees(tmp_path):
    """No notice that is true of every run (the CPU attention line) comes before the error."""
    run = subprocess.run(
        [sys.executable, "-m", "genaccel", "generate", PROMPT, "--height", "100", *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["genaccel: error: height 100: must be a positive multiple of 16 for Wan 2.1/2.2"]
    assert run.stdout == "" and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fps", "0"], "--fps: must be between 1 and 240"),
        (["--fps", "1000000000"], "--fps: must be between 1 and 240"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_malformed_command_lines_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(["generate", PROMPT, "--out", str(tmp_path / "x.mp4"), *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["calibrate"], ["bench", "--out", "bench-out"]])
@pytest.mark.parametrize(
    "prompts, message",
    [
        (["--prompt", ""], "the prompt is empty"),
        (["--prompt", "a\x07"], "--prompt holds the control character U+0007 at position 2"),
        (["--prompts", "binary.txt"], "binary.txt: a binary file, not a prompts file (it holds NUL bytes)"),
        (["--prompts", "latin1.txt"], "latin1.txt:2: not UTF-8 text (byte 0xe9)"),
    ],
)
def test_bench_and_calibrate_check_their_prompts_like_a_batch(tmp_path, capsys, monkeypatch, command, prompts, message):
    import genaccel.generation.load

    monkeypatch.setattr(genaccel.generation.load, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("a red circle\ncaf\u00e9".encode("latin-1"))
    assert len(_refused(capsys, [*command, *prompts], message)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.txt", "latin1.txt"]


# ----------------------------------------------------------------------------- models and their files
def _model_copy(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(embedded_model_dir(), model)
    return model


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


MODEL_CASES = {
    "truncated weights": (
        lambda m: _truncate(m / "transformer" / "diffusion_pytorch_model.safetensors"),
        "model/transformer/diffusion_pytorch_model.safetensors: corrupt or truncated weights",
    ),
    "garbage weights": (
        lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64),
        "model/vae/diffusion_pytorch_model.safetensors: corrupt or truncated weights",
    ),
    "missing weights": (
        lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
        "model/vae: no weights",
    ),
    "pickle weights": (
        lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").rename(m / "vae" / "diffusion_pytorch_model.bin"),
        "model/vae/diffusion_pytorch_model.bin: pickle weights",
    ),
    "broken config": (
        lambda m: (m / "vae" / "config.json").write_text('{"a":'),
        "model/vae/config.json: not valid JSON",
    ),
    "broken index": (lambda m: (m / "model_index.json").write_text("[]"), "model/model_index.json: not a diffusers"),
    "missing component": (lambda m: shutil.rmtree(m / "text_encoder"), "the component 'text_encoder' is missing"),
    "broken genaccel.toml": (lambda m: (m / "genaccel.toml").write_text("height = ["), "genaccel.toml: not valid TOML"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_broken_model_folder_is_named_in_one_line(tmp_path, capsys, monkeypatch, case):
    break_it, message = MODEL_CASES[case]
    model = _model_copy(tmp_path)
    break_it(model)
    monkeypatch.chdir(tmp_path)
    lines = _refused(capsys, ["generate", PROMPT, "--out", "x.mp4", "--model", "model", "--device", "cpu"], message)
    assert len(lines) == 1 and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(
    "model, message",
    [
        ("/nonexistent/folder", "unknown model '/nonexistent/folder'"),
        ("tiny-nothing", "unknown model 'tiny-nothing'"),
        (".", "is not a diffusers pipeline folder"),
    ],
)
def test_a_model_that_is_not_one_is_refused(tmp_path, capsys, monkeypatch, model, message):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["generate", PROMPT, "--out", "x.mp4", "--model", model], message)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- batch files
BATCH_CASES = [
    # (file name, content, messages (one line each))
    ("p.jsonl", '{"prompt": "a", "steps": "3"}', ["p.jsonl:1: steps must be a whole number; got str '3'"]),
    ("p.jsonl", '{"prompt": "a", "steps": 2.5}', ["p.jsonl:1: steps must be a whole number; got 2.5"]),
    ("p.jsonl", '{"prompt": "a", "frames": [5]}', ["p.jsonl:1: frames must be a whole number; got list [5]"]),
    ("p.jsonl", '{"prompt": "a", "vae_tiling": 1}', ["p.jsonl:1: vae-tiling must be true or false; got int 1"]),
    ("p.jsonl", '{"prompt": "a", "guidance": true}', ["p.jsonl:1: guidance must be a number; got bool True"]),
    ("p.jsonl", '{"prompt": 5}', ["p.jsonl:1: prompt must be text; got int 5"]),
    ("p.jsonl", '{"prompt": "a", "sed": 1}', ["p.jsonl:1: unknown option 'sed' (did you mean 'seed'?)"]),
    ("p.jsonl", '{"prompt": "a", "stpes": 1}', ["p.jsonl:1: unknown option 'stpes' (did you mean 'steps'?)"]),
    ("p.jsonl", '{"promt": "a"}', ['p.jsonl:1: the line has no "prompt"']),
    ("p.jsonl", '["a"]', ["p.jsonl:1: each line must be a JSON object"]),
    ("p.jsonl", '{"prompt": "a",}', ["p.jsonl:1: not valid JSON"]),
    ("p.jsonl", '{"prompt": "a", "seed": 1' + "0" * 5000 + "}", ["p.jsonl:1: not valid JSON (a number too long"]),
    ("p.jsonl", '{"prompt": "a", "name": {"x": 1}}', ["p.jsonl:1: name must be text or a whole number; got dict"]),
    (
        "p.jsonl",
        '{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}',
        ["p.jsonl:2: the name 'x' is already used by line 1"],
    ),
    ("p.jsonl", '{"prompt": "a", "seed": 1e400}', ["p.jsonl:1: seed must be a finite number; got inf"]),
    ("p.jsonl", '{"prompt": "a", "accel": "teacache(threshold=-1)"}', ["p.jsonl:1: "]),
    ("p.txt", "a red\x00circle", ["p.txt: a binary file, not a prompts file (it holds NUL bytes)"]),
    ("p.txt", b"a red \xff circle", ["p.txt:1: not UTF-8 text (byte 0xff)"]),
    ("p.txt", "ok\n\x1b[31mred", ["p.txt:2: prompt holds the control character U+001B at position 1"]),
    ("p.csv", "a", ["p.csv: batch files must be .txt (one prompt per line) or .jsonl"]),
    ("p.txt", "# only a comment\n\n", ["p.txt: no prompts found"]),
]


@pytest.mark.parametrize("name, content, messages", BATCH_CASES, ids=[f"{n}:{m[0][:40]}" for n, _, m in BATCH_CASES])
def test_a_bad_batch_file_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, name, content, messages):
    import genaccel.generation.load

    monkeypatch.setattr(genaccel.generation.load, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    lines = _refused(capsys, ["batch", str(path), "--out", str(tmp_path / "out")], "")
    for message in messages:  # each error on its own line, naming the file and line
        assert any(line.startswith(f"genaccel: error: {tmp_path}/{message}") for line in lines), lines
    assert not (tmp_path / "out").exists()


def test_every_bad_line_of_a_batch_file_is_listed(tmp_path, capsys):
    lines = [{"prompt": PROMPT, "steps": "3"}, {"prompt": PROMPT}, {"promt": PROMPT}, {"prompt": PROMPT, "sed": 1}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    errors = _refused(capsys, ["batch", str(path), "--out", str(tmp_path / "out")], "p.jsonl:1:")
    assert [re.search(r"p\.jsonl:(\d+): ", e).group(1) for e in errors] == ["1", "3", "4"]  # line 2 is fine


def test_a_file_of_many_bad_lines_lists_the_first_ones_and_counts_the_rest(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join('{"prompt": "a", "steps": 0}' for _ in range(MAX_REPORTED + 5)))
    errors = _refused(capsys, ["batch", str(path), "--out", str(tmp_path / "out")], "steps must be between")
    assert len(errors) == MAX_REPORTED + 1 and errors[-1] == "genaccel: error: ... and 5 more errors"


def test_model_checks_of_a_batch_list_every_item(tmp_path, capsys):
    """What only the model can check (frame rules, settings) is checked for every item before the first video."""
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(line)
            for line in [{"prompt": PROMPT, "frames": 6}, {"prompt": PROMPT}, {"prompt": PROMPT, "setting": "huge"}]
        )
    )
    errors = _refused(capsys, ["batch", str(path), "--out", str(tmp_path / "out"), *TINY], "p.jsonl:1: frames 6")
    assert len(errors) == 2 and "p.jsonl:3: this model has no 'huge' setting" in errors[1]
    assert not (tmp_path / "out").exists()
