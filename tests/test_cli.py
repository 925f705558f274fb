"""The command line contract: generate (formats, --json), batch (resume), list, calibrate, and
clear errors with exit status 2 and no partial output."""

import json

import pytest

from genaccel.cli import main
from genaccel.io.video import read_video
from genaccel.pipelines.families import FAMILIES

PROMPT = "a red circle moving left on a black background"
JSON_KEYS = {
    "out",
    "model",
    "accel",
    "seed",
    "num_inference_steps",
    "num_frames",
    "height",
    "width",
    "seconds",
    "denoise_seconds",
    "decode_seconds",
    "transformer_calls",
    "skipped_calls",
}


def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow  # the embedded model, the default
@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip.webp", "frames"])
def test_generate_writes_each_format(tmp_path, capsys, name):
    out = tmp_path / name
    assert main(["generate", PROMPT, "--out", str(out), "--json", "--seed", "3"]) == 0
    summary = _json_line(capsys)
    assert JSON_KEYS <= set(summary)
    assert summary["out"] == str(out) and summary["seed"] == 3 and summary["accel"] == "none"
    assert summary["transformer_calls"] == 2 * summary["num_inference_steps"] and summary["skipped_calls"] == 0
    video = read_video(out)
    assert video.shape[1:] == (summary["height"], summary["width"], 3)
    if name.endswith(".mp4") or name == "frames":
        assert video.shape[0] == summary["num_frames"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary files left


@pytest.mark.parametrize("family", ["wan", "wan22", "cogvideox", "hunyuanvideo", "ltx", "latte", "mochi"])
def test_generate_with_and_without_accel_on_every_family(tmp_path, capsys, family):
    for accel in ("none", "fast"):
        out = tmp_path / f"{accel}.mp4"
        assert (
            main(["generate", PROMPT, "--model", f"tiny-{family}", "--accel", accel, "--out", str(out), "--json"]) == 0
        )
        summary = _json_line(capsys)
        assert out.is_file() and summary["model"] == f"tiny-{family}"
        if accel == "fast":  # the preset resolves to real accelerators that save work
            assert summary["accel"] != "none"
            assert summary["skipped_calls"] + summary["attention_reused"] > 0


def test_generate_overrides_settings(tmp_path, capsys):
    out = tmp_path / "c.mp4"
    assert (
        main(
            [
                "generate",
                PROMPT,
                "--frames",
                "5",
                "--steps",
                "4",
                "--height",
                "48",
                "--width",
                "64",
                "--guidance",
                "3",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    s = _json_line(capsys)
    assert (s["num_frames"], s["num_inference_steps"], s["height"], s["width"], s["guidance_scale"]) == (
        5,
        4,
        48,
        64,
        3.0,
    )
    assert read_video(out).shape == (5, 48, 64, 3)


def test_accelerated_output_is_reported(tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                PROMPT,
                "--accel",
                "teacache(threshold=1e9,coefficients=identity)",
                "--out",
                str(tmp_path / "a.mp4"),
                "--json",
            ]
        )
        == 0
    )
    s = _json_line(capsys)
    skipped = 2 * s["num_inference_steps"] - 4  # every pass but the first and last step of each CFG branch
    assert s["skipped_calls"] == skipped and s["accelerator_stats"]["teacache"]["passes_skipped"] == skipped


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "8"], "4k+1"),
        (["--accel", "bogus"], "unknown accelerator"),
        (["--accel", "teacache(threshold=x)"], "bad value"),
        (["--accel", "teacache("], "unbalanced"),
        (["--accel", "teacache+fbcache"], "cannot stack"),
        (["--model", "/does/not/exist"], "unknown model"),
        (["--model", "tiny-nothing"], "unknown model"),
        (["--height", "30"], "multiple of 16"),
        (["--model", "tiny-latte", "--frames", "3"], "makes 4 frames"),
        (["--accel", "fastercache"], "does not support"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, args, message):
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line and line.startswith("genaccel: error:") for line in err)
    assert "Traceback" not in "\n".join(err)
    assert not any(tmp_path.iterdir())


def test_empty_prompt_unwritable_path_and_bad_suffix(tmp_path, capsys):
    assert main(["generate", "   ", "--out", str(tmp_path / "x.mp4")]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["generate", PROMPT, "--out", str(blocker / "x.mp4")]) == 2
    assert main(["generate", PROMPT, "--out", str(tmp_path / "x.avi")]) == 2
    err = capsys.readouterr().err
    assert "prompt is empty" in err and "not a folder" in err and "unsupported output format" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "value, message",
    [("0", "between 1 and 1000"), ("-3", "between 1 and 1000"), ("2.5", "whole number"), ("nan", "whole number")],
)
def test_bad_steps_fail_before_the_model_loads(value, message, capsys, monkeypatch):
    import genaccel.generation.load

    monkeypatch.setattr(genaccel.generation.load, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["generate", PROMPT, "--steps", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genaccel: error: --steps must be") and message in err


# ----------------------------------------------------------------------------- never delete what is not ours
def test_generate_refuses_a_folder_of_user_files(tmp_path, capsys, monkeypatch):
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "notes.txt").write_text("precious")
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (str(docs), ".", "", "..", "keep.txt/"):
        assert main(["generate", PROMPT, "--out", out]) == 2, out
        assert capsys.readouterr().err.startswith("genaccel: error:")
    assert (docs / "notes.txt").read_text() == "precious" and (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "mydocs"]
    assert [p.name for p in docs.iterdir()] == ["notes.txt"]


def test_generate_replaces_only_its_own_frame_folder(tmp_path, capsys):
    frames = tmp_path / "frames"
    assert main(["generate", PROMPT, "--out", str(frames), "--steps", "2", "--frames", "5"]) == 0
    assert main(["generate", PROMPT, "--out", str(frames), "--steps", "2", "--frames", "9"]) == 0
    assert read_video(frames).shape[0] == 9 and sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    (frames / "my-edit.txt").write_text("added by the user")  # now it holds a file genaccel did not write
    assert main(["generate", PROMPT, "--out", str(frames), "--steps", "2"]) == 2
    assert (frames / "my-edit.txt").is_file() and read_video(frames).shape[0] == 9


@pytest.mark.parametrize("names", [[".", ".."], ["..", "../.."], ["../escape", "/abs"]])
def test_batch_names_stay_inside_the_output_folder(tmp_path, capsys, names):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("user file")
    (tmp_path / "sibling.txt").write_text("user file")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": PROMPT, "name": n, "steps": 2, "frames": 5}) + "\n" for n in names)
    )
    assert main(["batch", str(prompts), "--out", str(out), "--format", "png", "--json"]) == 0
    assert _json_line(capsys)["done"] == 2
    assert (out / "earlier.txt").read_text() == "user file" and (tmp_path / "sibling.txt").read_text() == "user file"
    written = sorted(p.name for p in out.iterdir())
    assert "earlier.txt" in written and "manifest.jsonl" in written and len(written) == 4
    for entry in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        assert (out / entry["out"]).parent == out and read_video(out / entry["out"]).shape[0] == 5


def test_batch_names_with_dots_and_files_in_the_way(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "v1-5.mp4").write_bytes(b"the user's video")
    prompts = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "A cat. It runs", "steps": 2, "frames": 5},
        {"prompt": PROMPT, "name": "scene.gif", "steps": 2, "frames": 5},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["batch", str(prompts), "--out", str(out), "--format", "png", "--json"]) == 0
    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["out"] for m in manifest] == ["0000-a-cat-it-runs", "scene-gif"]  # folders, never a .gif file
    assert all((out / m["out"]).is_dir() for m in manifest)
    # A file genaccel did not write, under an item's name, is refused before anything runs.
    prompts.write_text(json.dumps({"prompt": PROMPT, "name": "v1.5", "steps": 2}) + "\n")
    assert main(["batch", str(prompts), "--out", str(out)]) == 2
    assert "genaccel did not write it" in capsys.readouterr().err
    assert (out / "v1-5.mp4").read_bytes() == b"the user's video"


def test_batch_resume_redoes_items_asked_differently(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPT, "name": "a", "steps": 2, "frames": 5}) + "\n")
    out = tmp_path / "out"
    assert main(["batch", str(prompts), "--out", str(out), "--json"]) == 0
    assert main(["batch", str(prompts), "--out", str(out), "--json"]) == 0
    assert _json_line(capsys)["skipped"] == 1
    for argv in (["--format", "gif"], ["--seed", "5"]):  # another format, another request: redone
        assert main(["batch", str(prompts), "--out", str(out), "--json", *argv]) == 0
        assert _json_line(capsys)["done"] == 1
    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 1 and manifest[0]["seed"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "manifest.jsonl"]  # the folder is what the manifest says


def test_batch_refuses_duplicate_names_and_names_errors_by_line(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"prompt": PROMPT, "name": "a"}) + "\n" + json.dumps({"prompt": PROMPT, "name": "a"}) + "\n"
    )
    assert main(["batch", str(prompts), "--out", str(tmp_path / "o")]) == 2
    assert "p.jsonl:2: the name 'a' is already used by line 1" in capsys.readouterr().err
    prompts.write_text(json.dumps({"prompt": PROMPT, "frames": 6}) + "\n")
    assert main(["batch", str(prompts), "--out", str(tmp_path / "o")]) == 2
    assert (
        "p.jsonl:1: frames 6: Wan 2.1/2.2 makes frame counts of the form 4k+1" in capsys.readouterr().err
        and not (tmp_path / "o").exists()
    )


@pytest.mark.slow  # the embedded model, the default
def test_batch_txt_and_jsonl_resume(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"prompt": PROMPT, "seed": 4, "accel": "teacache(threshold=1e9,coefficients=identity)"})
        + "\n"
        + json.dumps({"prompt": "a blue square moving up on a gray background", "name": "square", "frames": 5})
        + "\n"
    )
    out = tmp_path / "out"
    assert main(["batch", str(prompts), "--out", str(out), "--json"]) == 0
    assert _json_line(capsys)["done"] == 2
    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["name"] for m in manifest] == ["0000-a-red-circle-moving-left-on-a-black-background", "square"]
    assert (
        manifest[0]["seed"] == 4
        and manifest[0]["skipped_calls"] == 2 * manifest[0]["num_inference_steps"] - 4
        and manifest[1]["num_frames"] == 5
    )
    assert read_video(out / "square.mp4").shape[0] == 5
    # Re-run: nothing is redone; a deleted video is redone.
    assert main(["batch", str(prompts), "--out", str(out), "--json"]) == 0
    assert _json_line(capsys)["skipped"] == 2
    (out / "square.mp4").unlink()
    assert main(["batch", str(prompts), "--out", str(out), "--json"]) == 0
    summary = _json_line(capsys)
    assert (summary["done"], summary["skipped"]) == (1, 1)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2

    txt = tmp_path / "p.txt"
    txt.write_text(f"{PROMPT}\n\n# a comment\na white circle standing still on a black background\n")
    assert main(["batch", str(txt), "--out", str(tmp_path / "t"), "--format", "gif", "--json"]) == 0
    assert _json_line(capsys)["done"] == 2 and len(list((tmp_path / "t").glob("*.gif"))) == 2


def test_batch_rejects_bad_files_before_generating(tmp_path, capsys):
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "x", "frames": 8}\n')
    assert main(["batch", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "4k+1" in capsys.readouterr().err and not (tmp_path / "o").exists()
    bad.write_text('{"prompt": "ok", "colour": 1}\n')
    assert main(["batch", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown option" in capsys.readouterr().err
    bad.write_text("not json\n")
    assert main(["batch", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "b.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_list_json_has_models_accelerators_presets_matrix(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"tiny-wan", "tiny-mochi", "tiny", "tiny-causal"} <= set(data["models"])
    assert set(data["accelerators"]) == {
        "teacache",
        "fbcache",
        "magcache",
        "pab",
        "fastercache",
        "taylorseer",
        "cfgcache",
        "svg",
        "radial",
        "sta",
        "topk",
        "asymrnr",
        "tome",
        "kvcache",
        "schedule",
        "lightcache",
        "compile",
        "quant",
    }
    assert data["stacking"]["schedule"]["magcache"] != "yes" and data["stacking"]["schedule"]["cfgcache"] == "yes"
    assert all(v == "yes" for v in data["stacking"]["lightcache"].values())  # it takes nothing over
    assert (
        data["compatibility"]["wan"]["kvcache"] == "yes" and "rotary" in data["compatibility"]["cogvideox"]["kvcache"]
    )
    assert (
        data["stacking"]["kvcache"]["teacache"] == "yes" and "keys and values" in data["stacking"]["kvcache"]["fbcache"]
    )
    assert data["stacking"]["asymrnr"]["sta"] != "yes" and data["stacking"]["asymrnr"]["magcache"] == "yes"
    assert data["stacking"]["tome"]["asymrnr"] != "yes" and data["stacking"]["tome"]["pab"] != "yes"
    assert data["stacking"]["tome"]["teacache"] == "yes"
    assert "factorised" in data["compatibility"]["latte"]["sta"] and data["compatibility"]["wan"]["sta"] == "yes"
    assert data["presets"]["wan"]["balanced"]
    assert data["compatibility"]["wan"]["fastercache"] != "yes" and data["compatibility"]["wan"]["teacache"] == "yes"
    assert data["stacking"]["teacache"]["pab"] == "yes" and data["stacking"]["teacache"]["fbcache"] != "yes"
    assert data["stacking"]["magcache"]["cfgcache"] == "yes" and data["stacking"]["fastercache"]["cfgcache"] != "yes"
    assert main(["list"]) == 0
    assert "Compatibility" in capsys.readouterr().out


def test_calibrate_writes_a_profile_that_teacache_uses(tmp_path, capsys):
    profile = tmp_path / "p.toml"
    assert (
        main(
            [
                "calibrate",
                "--model",
                "tiny-ltx",
                "--prompt",
                PROMPT,
                "--prompt",
                "a blue square moving up on a gray background",
                "--out",
                str(profile),
                "--json",
            ]
        )
        == 0
    )
    data = _json_line(capsys)
    assert len(data["teacache"]["coefficients"]) == 5 and len(data["magcache"]["ratios"]) == data["num_inference_steps"]
    import tomllib

    assert tomllib.loads(profile.read_text())["teacache"]["coefficients"] == pytest.approx(
        data["teacache"]["coefficients"]
    )
    # Written to the user profile folder by default, then picked up by coefficients=auto and magcache.
    assert main(["calibrate", "--model", "tiny-ltx", "--json"]) == 0
    assert (
        main(
            [
                "generate",
                PROMPT,
                "--model",
                "tiny-ltx",
                "--accel",
                "teacache+magcache(threshold=0)",
                "--out",
                str(tmp_path / "c.mp4"),
                "--json",
            ]
        )
        == 2
    )  # teacache and magcache both skip passes
    assert (
        main(
            [
                "generate",
                PROMPT,
                "--model",
                "tiny-ltx",
                "--accel",
                "teacache(threshold=0.2)",
                "--out",
                str(tmp_path / "c.mp4"),
                "--json",
            ]
        )
        == 0
    )
    used = _json_line(capsys)["accelerator_stats"]["teacache"]["coefficients"]
    from genaccel.models.profiles import load_profile

    assert used == pytest.approx(load_profile("tiny-ltx")["teacache"]["coefficients"])
    assert used != pytest.approx(list(FAMILIES["ltx"].teacache_coefficients["ltx-video-0.9.1"]))


def test_magcache_without_profile_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["generate", PROMPT, "--model", "tiny-mochi", "--accel", "magcache", "--out", str(tmp_path / "m.mp4")])
        == 2
    )
    assert "run `genaccel calibrate`" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "--accel" in text and ".mp4, .gif, .webp" in text


def test_request_options_are_generated_from_the_request_fields(capsys):
    from genaccel.generation.request import FIELDS, option_name

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for name, f in FIELDS.items():
        if name != "prompt":
            assert f"--{option_name(name)}" in text and f.metadata["help"].split(" (")[0][:30] in " ".join(text.split())


def test_ui_options_reach_the_server(monkeypatch):
    import genaccel.ui.app

    seen = {}
    monkeypatch.setattr(genaccel.ui.app, "launch", lambda **kwargs: seen.update(kwargs))
    assert (
        main(
            [
                "ui",
                "--models",
                "tiny-wan",
                "tiny-ltx",
                "--auth",
                "ann:secret",
                "--queue-size",
                "3",
                "--max-size",
                "64",
                "--max-frames",
                "9",
                "--max-memory",
                "2GB",
                "--keep-hours",
                "0",
            ]
        )
        == 0
    )
    assert seen["host"] == "127.0.0.1" and seen["share"] is False  # this machine only unless asked
    assert seen["models"] == ["tiny-wan", "tiny-ltx"] and seen["auth"] == ["ann:secret"]
    assert (seen["queue_size"], seen["max_size"], seen["max_frames"], seen["max_steps"]) == (3, 64, 9, 100)
    assert seen["max_memory"] == "2GB" and seen["keep_hours"] == 0.0
