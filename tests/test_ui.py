"""The web UI: its service layer in plain Python, and each tab's function through gradio_client."""

import http.client
import json
import os
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import free_port

from genaccel.errors import InputError, MemoryFitError, SpecError
from genaccel.generation.request import request_from_options
from genaccel.io.video import read_video
from genaccel.pipelines.families import FAMILIES
from genaccel.ui.controls import CONTROL_LAYOUT, controls_from_spec, default_controls, spec_from_controls
from genaccel.ui.jobs import Cancelled, JobRunner, PipelineCache
from genaccel.ui.service import Studio, UILimits

PROMPT = "a red circle moving left on a black background"
SKIPPING = "teacache(threshold=1e9,coefficients=identity)"


def _request(**options):
    return request_from_options({"prompt": PROMPT, **options})


# ----------------------------------------------------------------------------- controls
def test_controls_round_trip_presets_and_specs():
    wan = FAMILIES["wan"]
    assert spec_from_controls(default_controls()) == "none"
    for preset in ("quality", "balanced", "fast"):
        spec = spec_from_controls(controls_from_spec(preset, wan))
        assert spec != "none"
        # Same accelerators and parameters as the preset (defaults may be left out).
        assert spec_from_controls(controls_from_spec(spec)) == spec
    values = controls_from_spec("pab(spatial=3,window=200:700)+teacache(threshold=0.2)")
    assert spec_from_controls(values) == "teacache(threshold=0.2)+pab(spatial=3,window=200:700)"
    assert spec_from_controls(controls_from_spec("pab")) == "pab"  # a range at its default is left out


def test_controls_validate_values_and_stacking():
    values = controls_from_spec("teacache")
    values[1] = "not a number"  # teacache.threshold
    with pytest.raises(SpecError, match="threshold"):
        spec_from_controls(values)
    with pytest.raises(SpecError, match="cannot stack"):
        spec_from_controls(controls_from_spec("teacache+fbcache"))


def test_the_page_explains_unsupported_accelerators(studio):
    info = studio.model_info("tiny-wan")
    assert set(info["unsupported"]) == {"fastercache"} and "batched CFG" in info["unsupported"]["fastercache"]


def test_the_page_offers_presets_tuned_for_the_model(studio, tmp_path, monkeypatch):
    from genaccel.models.profiles import load_profile
    from genaccel.tools.tune import save_preset

    monkeypatch.setenv("GENACCEL_PROFILE_DIR", str(tmp_path))
    assert studio.model_info("tiny-wan")["presets"]["default"] == ["quality", "balanced", "fast"]
    save_preset(tmp_path / "tiny-wan.toml", "mine", "default", "cfgcache(interval=3)", {}, load_profile("tiny-wan"))
    assert studio.model_info("tiny-wan")["presets"]["default"] == ["quality", "balanced", "fast", "mine"]
    values = controls_from_spec("mine", FAMILIES["wan"], studio.model_info("tiny-wan")["preset_specs"]["default"])
    assert "cfgcache(interval=3)" in spec_from_controls(values)


# ----------------------------------------------------------------------------- groups, start preset, decoder
def test_every_accelerator_lands_in_exactly_one_group(monkeypatch):
    from genaccel.accelerators import ACCELERATORS
    from genaccel.ui.controls import CONTROL_GROUPS, NO_SLOT_GROUP, SLOT_GROUPS, group_of

    shown = [name for names in CONTROL_GROUPS.values() for name in names]
    assert sorted(shown) == sorted(CONTROL_LAYOUT) and len(shown) == len(set(shown))
    held = dict(SLOT_GROUPS)
    for title, names in CONTROL_GROUPS.items():
        for name in names:  # a group holds what takes one of its slots (or, for the systems, no slot at all)
            slots = ACCELERATORS[name].slots
            assert slots & held[title] or (not slots and title == NO_SLOT_GROUP), name
    # Every slot an accelerator takes has a group (kvcache's too, though only the Stream tab sets it).
    assert set().union(*(cls.slots for cls in ACCELERATORS.values())) <= set().union(*held.values())
    for name, title in (
        ("teacache", "Skip passes"),
        ("pab", "Reuse attention"),
        ("svg", "Sparse attention"),
        ("tome", "Merge tokens"),
        ("quant", "Memory / systems"),
    ):
        assert group_of(name) == title

    class Teleport:  # a new kind of accelerator gets a group before it can ship
        slots = frozenset({"teleport"})

    monkeypatch.setitem(ACCELERATORS, "teleport", Teleport)
    with pytest.raises(ValueError, match="no group"):
        group_of("teleport")


def test_the_docs_list_the_groups_as_the_page_shows_them():
    """docs/ui.md's table of groups names the accelerators of each, as CONTROL_GROUPS has them."""
    import re

    from genaccel.ui.controls import CONTROL_GROUPS

    page = (Path(__file__).parent.parent / "docs" / "ui.md").read_text()
    rows = re.findall(r"^  \| ([A-Z][^|]*?) \| [^|]* \| ([a-z, ]+) \|$", page, re.M)
    assert {title: names.split(", ") for title, names in rows} == CONTROL_GROUPS


def _props(app, elem_id: str) -> dict:
    """The built page's properties of the component with this elem_id."""
    found = [c["props"] for c in app.get_config_file()["components"] if c["props"].get("elem_id") == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


def test_the_page_starts_on_the_balanced_preset_with_grouped_accelerators(studio):
    from genaccel.generation.spec import parse_spec
    from genaccel.ui.app import build_app
    from genaccel.ui.controls import CONTROL_GROUPS

    info = studio.model_info("tiny-wan")
    app = build_app(studio)
    balanced = spec_from_controls(controls_from_spec("balanced", FAMILIES["wan"], info["preset_specs"]["default"]))
    assert _props(app, "preset")["value"] == "balanced"
    assert _props(app, "spec")["value"] == balanced != "none"  # the spec box is what runs
    on = {name for name in CONTROL_LAYOUT if _props(app, f"accel-{name}")["value"]}
    assert on == {r.name for r in parse_spec(balanced)}
    # One collapsible group per kind, open where the preset turned an accelerator on.
    for title, names in CONTROL_GROUPS.items():
        group = _props(app, "group-" + "-".join(title.lower().replace("/", " ").split()))
        assert group["label"] == title and group["open"] == bool(on & set(names))
    # The model's unsupported accelerators: disabled, and each reason said once in the page.
    assert not _props(app, "accel-fastercache")["interactive"]
    page = json.dumps(app.get_config_file()["components"])
    for name, why in info["unsupported"].items():
        assert page.count(json.dumps(why)[1:-1]) == 1
        assert f"- **{name}**: " in _props(app, "support-notes")["value"]
    # tiny-wan ships no light decoder: the choice is full only, with the reason.
    decoder = _props(app, "decoder")
    assert decoder["value"] == "full" and not decoder["interactive"] and info["light_decoder_note"] in decoder["info"]


def test_without_a_balanced_preset_the_page_starts_on_none(studio, monkeypatch):
    from genaccel.ui.app import build_app
    from genaccel.ui.controls import start_preset

    real = studio.model_info

    def without_balanced(model):
        info = real(model)
        return {**info, "presets": {k: [p for p in v if p != "balanced"] for k, v in info["presets"].items()}}

    monkeypatch.setattr(studio, "model_info", without_balanced)
    app = build_app(studio)
    assert _props(app, "preset")["value"] == "none" and _props(app, "spec")["value"] == "none"
    assert not any(_props(app, f"accel-{name}")["value"] for name in CONTROL_LAYOUT)
    assert start_preset(["quality", "balanced"]) == "balanced" and start_preset(["quality", "fast"]) == "none"


def _random_light_decoder(folder: Path, spatial: int) -> Path:
    """A light decoder folder (config.json, model.safetensors) with random weights, small, for a VAE of 16
    latent channels that scales space by `spatial` (4 or 8) and time by 4."""
    from safetensors.torch import save_file

    from genaccel.decoding.taehv import TAEHVConfig, TAEHVDecoder

    space, patch = {8: ((True, True, True), 1), 4: ((False, True, False), 2)}[spatial]
    config = TAEHVConfig(latent_channels=16, channels=(8, 8, 8, 8), blocks=1, space_upscale=space, patch_size=patch)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(TAEHVDecoder(config).state_dict(), str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def light_studio(tmp_path_factory):
    """A Studio whose models ship a light decoder: random weights where a model has none of its own (the tiny
    pipelines), so decoder=light and live previews run wherever the tests do."""
    from genaccel.generation.load import load_pipeline

    root = tmp_path_factory.mktemp("ui-light")

    def loader(model, device):
        pipe = load_pipeline(model, device=device, offload=None)
        if getattr(pipe, "_genaccel_light_decoder_dir", None) is None:
            pipe._genaccel_light_decoder_dir = _random_light_decoder(root / model, pipe.vae_scale_factor_spatial)
        return pipe

    return Studio(
        root / "out", default_model="tiny-wan", device="cpu", models=["tiny-causal"], cache=PipelineCache(loader=loader)
    )


def test_the_service_yields_live_previews_every_k_steps(light_studio):
    events = list(light_studio.generate("s", "tiny-wan", _request(decoder="light"), preview_every=2))
    kinds = [k for k, _ in events if k != "progress"]
    previews = [v for k, v in events if k == "preview"]
    done = events[-1][1]
    figures = done["figures"]
    assert kinds[0] == "previewing" and kinds[-1] == "done" and set(kinds[1:-1]) == {"preview"}
    assert [p["step"] for p in previews] == list(range(2, figures["num_inference_steps"], 2))
    assert figures["previews"] == len(previews) and figures["decoder"] == "light"
    for p in previews:  # frames side by side, as the page shows them
        image = p["image"]
        assert image.dtype == "uint8" and image.ndim == 3 and image.shape[0] == figures["height"]
        assert p["total"] == figures["num_inference_steps"]
    assert len({p["image"].tobytes() for p in previews}) > 1  # the estimate moves as the video denoises
    # K = 0: no previews
    quiet = [k for k, _ in light_studio.generate("s", "tiny-wan", _request(), preview_every=0)]
    assert "preview" not in quiet and "previewing" not in quiet and quiet[-1] == "done"


def test_without_a_light_decoder_there_are_no_previews_and_no_error(studio):
    events = list(studio.generate("s", "tiny-wan", _request(), preview_every=2))
    assert not {"preview", "previewing"} & {k for k, _ in events} and events[-1][0] == "done"
    with pytest.raises(
        InputError, match=r"^The light decoder is not available for tiny-wan: this model ships no light decoder"
    ):
        list(studio.generate("s", "tiny-wan", _request(decoder="light")))


@pytest.mark.parametrize("every", [-1, 1.5, "5", True])
def test_a_bad_preview_interval_is_refused_in_one_line(tmp_path, every):
    studio = Studio(tmp_path, default_model="tiny-wan", device="cpu", cache=PipelineCache(loader=_never_loads))
    with pytest.raises(InputError, match=r"^Preview every K steps must be a whole number, 0 for no previews; got"):
        list(studio.generate("s", "tiny-wan", _request(), preview_every=every))


def test_compare_keeps_the_baseline_on_the_full_decoder(light_studio):
    done = list(light_studio.compare("s", "tiny-wan", _request(decoder="light")))[-1][1]
    base, fast = done["rows"]
    # no accelerators: the light decoder alone is compared, against the full decode
    assert (base["run"], base["decoder"]) == ("baseline", "full") and (fast["run"], fast["decoder"]) == (
        "accelerated",
        "light",
    )
    assert isinstance(fast["psnr_db"], float)


def test_a_stream_decodes_with_the_light_decoder(light_studio):
    done = list(light_studio.stream("s", "tiny-causal", _request(steps=1, decoder="light"), chunks=2))[-1][1]
    assert done["chunks"] == 2 and read_video(done["video"]).shape[0] == done["frames"]


def test_the_page_never_takes_a_decoder_path(tmp_path, light_studio):
    """light:PATH names a file on the server: refused in one line before the path is looked at, for every tab."""
    from genaccel.ui.app import _request as page_request

    weights = _random_light_decoder(tmp_path / "weights", 8)  # it exists: looking it up would succeed
    message = r"The decoder must be full or light on this server$"
    for value in (f"light:{weights}", f"light:{weights}/model.safetensors", "light:/no/such/file", "tiny"):
        with pytest.raises(InputError, match="^" + message):
            page_request(PROMPT, "", "default", 32, 32, 9, 2, 5.0, 0, "none", decoder=value)
    assert page_request(PROMPT, "", "default", 32, 32, 9, 2, 5.0, 0, "none", decoder="light").decoder == "light"
    # API callers of the Studio with a request built elsewhere: refused before any model loads
    closed = Studio(tmp_path / "out", default_model="tiny-wan", device="cpu", cache=PipelineCache(loader=_never_loads))
    request = _request(decoder=f"light:{weights}")
    for run in (closed.generate, closed.compare, closed.stream):
        with pytest.raises(InputError, match="^" + message):
            list(run("s", "tiny-wan", request))
    batch = tmp_path / "prompts.jsonl"
    batch.write_text(f'{{"prompt": "{PROMPT}", "decoder": "light"}}\n{{"prompt": "b", "decoder": "light:{weights}"}}\n')
    with pytest.raises(InputError, match=r"^prompts.jsonl:2: " + message):
        light_studio.batch_items(upload=batch)
    batch.write_text(f'{{"prompt": "{PROMPT}", "decoder": "light"}}\n{{"prompt": "b"}}\n')
    items = light_studio.batch_items(upload=batch, base=_request(decoder="full"))
    assert [item.request.decoder for item in items] == ["light", "full"]


# ----------------------------------------------------------------------------- jobs
def test_job_runner_runs_one_job_per_device_at_a_time():
    runner, running, peak = JobRunner(), [], []
    gate = threading.Event()

    def work(job):
        running.append(1)
        peak.append(len(running))
        gate.wait(5)
        running.pop()
        return "ok"

    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(list(runner.run(s, "cpu", work)))) for s in "ab"]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert max(peak) == 1 and all(r == [("done", "ok")] for r in results)


def test_job_runner_cancel_stops_the_sessions_job():
    runner, started = JobRunner(), threading.Event()

    def work(job):
        started.set()
        for _ in range(1000):
            job.emit("progress", None)
            job.check()
            threading.Event().wait(0.01)
        return "finished"

    events = runner.run("s1", "cpu", work)
    assert next(events)[0] == "progress"
    assert runner.cancel("s1") and not runner.cancel("other")
    with pytest.raises(Cancelled):
        list(events)
    assert list(runner.run("s1", "cpu", lambda job: 7)) == [("done", 7)]  # the runner keeps working


def test_pipeline_cache_loads_once():
    cache = PipelineCache(capacity=1, loader=lambda model, device: object())
    a = cache.get("m", "cpu")
    assert cache.get("m", "cpu") is a and cache.loads == 1
    cache.get("n", "cpu")
    assert cache.get("m", "cpu") is not a and cache.loads == 3  # capacity 1: m was dropped


# ----------------------------------------------------------------------------- studio
@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return Studio(tmp_path_factory.mktemp("ui-out"), default_model="tiny-wan", device="cpu")


def _inside(path, root) -> bool:
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def test_studio_generate_writes_inside_its_folder(studio):
    events = list(studio.generate("s", "tiny-wan", _request(accel=SKIPPING, seed=1)))
    progress = [v for k, v in events if k == "progress"]
    kind, done = events[-1]
    assert kind == "done" and _inside(done["video"], studio.output_dir)
    steps = done["figures"]["num_inference_steps"]
    assert [p[0] for p in progress] == list(range(1, steps + 1))
    assert read_video(done["video"]).shape[0] == done["figures"]["num_frames"]
    assert done["figures"]["skipped_calls"] > 0


def test_studio_compare_reports_speedup_and_quality(studio):
    done = list(studio.compare("s", "tiny-wan", _request(accel=SKIPPING)))[-1][1]
    base, fast = done["rows"]
    assert base["run"] == "baseline" and base["speedup"] == 1.0 and fast["accel"].startswith("teacache")
    assert isinstance(fast["psnr_db"], float) and 0 < fast["ssim"] <= 1
    assert base["adherence"] is not None  # a grammar prompt is scored
    for key in ("baseline", "accelerated", "side_by_side"):
        assert _inside(done[key], studio.output_dir) and read_video(done[key]).shape[0] > 0
    # The bench made it: its results and summary are in the compare folder, with the same figures.
    folder = Path(done["side_by_side"]).parent
    assert (folder / "results.jsonl").is_file() and (folder / "summary.csv").is_file()
    with pytest.raises(InputError, match="Choose accelerators"):
        list(studio.compare("s", "tiny-wan", _request(accel="none")))


def test_studio_batch_yields_items_and_a_zip(studio):
    from genaccel.generation.batch import parse_items

    items = parse_items(f"{PROMPT}\na blue square moving up on a gray background\n")
    events = list(studio.batch("s", "tiny-wan", items))
    videos = [v for k, v in events if k == "item"]
    done = events[-1][1]
    assert len(videos) == 2 and done["done"] == 2
    with zipfile.ZipFile(done["zip"]) as zf:
        names = set(zf.namelist())
        manifest = [json.loads(l) for l in zf.read("manifest.jsonl").decode().splitlines()]
    assert names == {"manifest.jsonl", *(m["out"] for m in manifest)} and len(manifest) == 2


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(prompt="  "), InputError, "prompt"),
        (dict(frames=6), InputError, r"4k\+1"),
        (dict(steps=0), InputError, "steps"),
        (dict(guidance=99.0), InputError, "guidance"),
        (dict(width=31), InputError, "multiple"),
        (dict(accel="fastercache"), SpecError, "fastercache"),
        (dict(setting="huge"), InputError, "no 'huge' setting"),
        (dict(max_memory="10kB"), InputError, "more than the 0.0 MB it may use"),
        (dict(offload="disk"), InputError, "offload must be one of"),
        (dict(model="/no/such/folder"), InputError, "model '/no/such/folder' is not offered on this server"),
        (dict(height=4096), InputError, r"Height 4096 is above this server's limit of 1280 \(--max-size\)"),
    ],
)
def test_studio_rejects_bad_input_before_running(studio, options, error, message):
    before = set(studio.output_dir.iterdir())
    model = options.pop("model", "tiny-wan")
    with pytest.raises(error, match=message):
        list(studio.generate("s", model, request_from_options({"prompt": PROMPT, **options})))
    assert set(studio.output_dir.iterdir()) == before  # nothing half-written


# ----------------------------------------------------------------------------- limits, models, failures
def _never_loads(model, device):
    raise AssertionError(f"{model} was loaded")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(height=4096), r"^Height 4096 is above this server's limit of 1280 \(--max-size\)$"),
        (dict(width=2048), r"^Width 2048 is above this server's limit of 1280 \(--max-size\)$"),
        (dict(frames=261), r"^Frames 261 is above this server's limit of 257 \(--max-frames\)$"),
        (dict(steps=101), r"^Steps 101 is above this server's limit of 100 \(--max-steps\)$"),
        (
            dict(prompt="x" * 2001),
            r"^The prompt is 2001 characters long, above this server's limit of 2000 \(--max-prompt\)$",
        ),
        (dict(negative="x" * 2001), r"^The negative prompt is 2001 characters long"),
    ],
)
def test_limits_refuse_a_request_before_any_model_loads(tmp_path, options, message):
    studio = Studio(tmp_path, default_model="tiny-wan", device="cpu", cache=PipelineCache(loader=_never_loads))
    for run in (studio.generate, studio.compare):
        with pytest.raises(InputError, match=message):
            list(run("s", "tiny-wan", _request(**options)))
    assert list(tmp_path.iterdir()) == []


def test_limits_count_the_models_defaults_and_batches(studio, tmp_path):
    from genaccel.generation.batch import parse_items

    small = Studio(
        tmp_path,
        default_model="tiny-wan",
        device="cpu",
        cache=studio.pipelines,
        limits=UILimits(max_size=16, max_batch=2),
    )
    with pytest.raises(InputError, match=r"^Height 32 is above this server's limit of 16"):  # tiny-wan's default
        list(small.generate("s", "tiny-wan", _request()))
    with pytest.raises(InputError, match=r"^The batch has 3 prompts, above this server's limit of 2 \(--max-batch\)"):
        list(small.batch("s", "tiny-wan", parse_items("a red circle\na blue circle\na green circle\n")))
    with pytest.raises(InputError, match=r"^prompts:2: Width 64 is above"):
        list(
            small.batch(
                "s",
                "tiny-wan",
                parse_items('{"prompt": "a", "width": 16, "height": 16}\n{"prompt": "b", "width": 64}\n', ".jsonl"),
            )
        )
    with pytest.raises(InputError, match="--max-frames"):
        UILimits(max_frames=0)


def test_the_servers_memory_budget_holds_for_every_request(studio, tmp_path):
    tight = Studio(
        tmp_path, default_model="tiny-wan", device="cpu", cache=studio.pipelines, limits=UILimits(max_memory="10kB")
    )
    for asked in (None, "1TB"):  # a caller may ask for less memory than the server allows, never for more
        with pytest.raises(MemoryFitError, match="more than the 0.0 MB it may use"):
            list(tight.generate("s", "tiny-wan", _request(max_memory=asked)))
    done = list(studio.generate("s", "tiny-wan", _request(max_memory="1TB")))[-1][1]  # no server budget: the device's
    assert done["figures"]["num_frames"] == 9


@pytest.mark.parametrize(
    "model",
    [
        "/no/such/folder",
        "{tmp}",
        "{tmp}/../..",
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "tiny-ltx",
        "tiny-wan ",
        " ",
        "x" * 500,
        "a\nb",
    ],
)
def test_only_offered_models_load_and_others_get_one_refusal(tmp_path, model):
    """A folder that exists, one that does not, a hub id or a built-in name not offered: the same words,
    and nothing is loaded (so nothing is downloaded, and an error says nothing about this machine)."""
    model = model.format(tmp=tmp_path)
    loaded = []
    studio = Studio(
        tmp_path,
        default_model="tiny-wan",
        device="cpu",
        models=["tiny-causal"],
        cache=PipelineCache(loader=lambda m, d: loaded.append(m) or object()),
    )
    assert studio.models == ["tiny-wan", "tiny-causal"] and studio.stream_models == ["tiny-causal"]
    if model == "tiny-wan ":
        assert studio.check_model(model) == "tiny-wan"  # the offered name, spaces aside
        return
    shown = " ".join(model.split())
    expected = (
        "Please choose a model."
        if not shown
        else f"model '{shown if len(shown) <= 63 else shown[:60] + '...'}' is not offered on this server"
    )
    calls = [
        lambda: studio.model_info(model),
        lambda: list(studio.generate("s", model, _request())),
        lambda: list(studio.stream("s", model, _request())),
        lambda: list(studio.batch("s", model, [])),
        lambda: list(studio.compare("s", model, _request())),
    ]
    for call in calls:
        with pytest.raises(InputError) as info:
            call()
        assert str(info.value) == expected and "\n" not in str(info.value)
    assert loaded == []


def test_offered_models_default_to_the_built_in_ones_and_the_stream_tab_lists_causal_ones(tmp_path):
    from genaccel.models.facts import builtin_models

    plain = Studio(tmp_path / "out", default_model="tiny-wan", device="cpu", cache=PipelineCache(loader=_never_loads))
    assert plain.models == list(dict.fromkeys(["tiny-wan", *builtin_models()]))
    causal = tmp_path / "my-causal"
    causal.mkdir()
    (causal / "genaccel.toml").write_text('base = "../base"\n[stream]\nchunk_frames = 1\n')
    chosen = Studio(
        tmp_path / "out",
        device="cpu",
        models=[str(causal), "tiny-causal", "tiny-ltx"],
        cache=PipelineCache(loader=_never_loads),
    )
    assert chosen.default_model == str(causal) and chosen.stream_models == [str(causal), "tiny-causal"]


def test_a_failing_job_releases_the_device():
    runner = JobRunner()

    def broken(job):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        list(runner.run("a", "cpu", broken))
    assert not runner.busy("cpu")
    assert list(runner.run("b", "cpu", lambda job: "ok")) == [("done", "ok")]  # another visitor's job runs


def test_a_job_failing_mid_run_leaves_the_studio_working(studio, monkeypatch):
    import importlib

    module = importlib.import_module("genaccel.generation.generate")  # the package's `generate` is the function
    real = module.generate

    def fails_at_step_two(pipe, prepared, callback=None, **kwargs):
        def step(i, total):
            callback(i, total)
            if i == 2:
                raise RuntimeError("the device fell over")

        return real(pipe, prepared, callback=step, **kwargs)

    before = set(studio.output_dir.iterdir())
    monkeypatch.setattr(module, "generate", fails_at_step_two)
    with pytest.raises(RuntimeError, match="fell over"):
        list(studio.generate("a", "tiny-wan", _request()))
    assert not studio.jobs.busy(studio.device) and set(studio.output_dir.iterdir()) == before  # no empty folder
    monkeypatch.setattr(module, "generate", real)
    assert list(studio.generate("b", "tiny-wan", _request()))[-1][0] == "done"


def test_stream_chunks_are_bounded(studio, tmp_path):
    few = Studio(
        tmp_path, default_model="tiny-wan", device="cpu", cache=studio.pipelines, limits=UILimits(max_chunks=2)
    )
    with pytest.raises(InputError, match=r"^Chunks 3 is above this server's limit of 2 \(--max-chunks\)$"):
        list(few.stream("s", "tiny-causal", _request(steps=1), chunks=3))
    done = list(few.stream("s", "tiny-causal", _request(steps=1), chunks=0))[-1][1]  # "until stopped" ends at 2
    assert done["chunks"] == 2 and not done["stopped"]
    with pytest.raises(InputError, match="--max-prompt"):
        few.switch_prompt("s", "x" * 2001)


# ----------------------------------------------------------------------------- clean-up
HOUR = 3600


def _age(path: Path, hours: float) -> None:
    """Set the modification time of a path and everything in it to `hours` ago (links untouched)."""
    stamp = time.time() - hours * HOUR
    for item in [*path.rglob("*"), path] if path.is_dir() and not path.is_symlink() else [path]:
        os.utime(item, (stamp, stamp), follow_symlinks=False)


def test_cleanup_removes_only_old_job_folders(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the server's")
    studio = Studio(out, default_model="tiny-wan", device="cpu", keep_hours=24)
    old, recent, touched = out / "generate-0123456789ab", out / "compare-0123456789ab", out / "batch-0123456789ab"
    for folder in (old, recent, touched):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "video.mp4").write_bytes(b"x")
    others = [out / "generate-notahexname", out / "notes", out / ".gradio", out / "stream-0123456789ab.mp4"]
    for other in others[:3]:
        other.mkdir()
    others[3].write_bytes(b"a file, not a folder")
    link = out / "stream-abcdef012345"
    link.symlink_to(outside, target_is_directory=True)
    for path in (old, touched, *others, link):
        _age(path, 48)
    _age(recent, 23)
    os.utime(touched / "sub" / "video.mp4")  # written to just now: the folder is in use
    assert studio.cleanup() == [old]
    assert not old.exists() and all(p.exists() for p in (recent, touched, *others, link))
    assert (outside / "keep.txt").read_text() == "not the server's"
    assert studio.cleanup(now=time.time() + 2 * HOUR) == [recent]  # aged past 24 hours
    forever = Studio(out, default_model="tiny-wan", device="cpu", keep_hours=0)
    _age(touched, 1000)
    assert forever.cleanup() == [] and touched.exists()
    with pytest.raises(InputError, match="--keep-hours"):
        Studio(out, default_model="tiny-wan", device="cpu", keep_hours=-1)


def test_cleanup_runs_when_a_job_starts_and_spares_running_jobs(studio, monkeypatch):
    import importlib

    module = importlib.import_module("genaccel.generation.generate")
    real, started, release = module.generate, threading.Event(), threading.Event()

    def held(pipe, prepared, **kwargs):  # the job runs until the test lets it go on
        started.set()
        release.wait(120)
        return real(pipe, prepared, **kwargs)

    monkeypatch.setattr(module, "generate", held)
    stale = studio.output_dir / "generate-00000000dead"
    stale.mkdir()
    _age(stale, 25)
    before = set(studio.output_dir.glob("generate-*"))
    events = []
    worker = threading.Thread(target=lambda: events.extend(studio.generate("s", "tiny-wan", _request())))
    worker.start()
    try:
        assert started.wait(120)
        assert not stale.exists()  # removed as the job started
        (running,) = set(studio.output_dir.glob("generate-*")) - before
        _age(running, 25)  # as old as the stale one, but its job runs
        assert running not in studio.cleanup() and running.exists()
    finally:
        release.set()
        worker.join(120)
    assert events[-1][0] == "done" and Path(events[-1][1]["video"]).parent == running


# ----------------------------------------------------------------------------- gradio_client
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from genaccel.ui.app import launch

    root = tmp_path_factory.mktemp("ui-app")
    with pytest.MonkeyPatch.context() as env:
        # Gradio also serves its examples cache (by default under the working folder): put it where the test sees it.
        env.setenv("GRADIO_EXAMPLES_CACHE", str(root / "examples"))
        # max_steps above the default: the cancel test needs a long job; max_size small: an API limit test.
        app = launch(
            port=free_port(),
            model="tiny-wan",
            device="cpu",
            output_dir=str(root / "out"),
            block=False,
            max_steps=1000,
            max_size=64,
        )
        assert app.server_name == "127.0.0.1"  # localhost unless asked
        yield SimpleNamespace(client=Client(app.local_url, verbose=False), out=root / "out", root=root, app=app)
        app.close()


@pytest.fixture(scope="module")
def client(served):
    return served.client, served.out


def _settings(**overrides):
    values = dict(
        model="tiny-wan",
        setting="default",
        width=32,
        height=32,
        frames=9,
        steps=4,
        guidance=5.0,
        seed=0,
        spec="none",
        offload="none",
        tiling=False,
        attention="native",
        decoder="full",
    )
    values.update(overrides)
    return [
        values[k]
        for k in (
            "model",
            "setting",
            "width",
            "height",
            "frames",
            "steps",
            "guidance",
            "seed",
            "spec",
            "offload",
            "tiling",
            "attention",
            "decoder",
        )
    ]


def test_api_generate(client):
    c, out = client
    video, download, figures, preview = c.predict(PROMPT, "", *_settings(spec=SKIPPING), api_name="/generate")
    path = video["video"] if isinstance(video, dict) else video
    assert read_video(path).shape[0] == 9 == figures["num_frames"]
    assert (
        figures["num_inference_steps"] == 4 and figures["skipped_calls"] > 0 and figures["accel"].startswith("teacache")
    )
    assert preview is None and "previews" not in figures  # tiny-wan ships no light decoder: no previews, no error
    # The server wrote the video (and Gradio its served copy) inside its output folder.
    assert list(out.glob("generate-*/video.mp4")) and list((out / ".gradio").rglob("*.mp4"))


def test_api_generate_with_offloading_and_tiling(client):
    c, _ = client
    plain = c.predict(PROMPT, "", *_settings(), api_name="/generate")
    video, _, figures, _ = c.predict(PROMPT, "", *_settings(offload="group", tiling=True), api_name="/generate")
    assert figures["offload"] == "group" and figures["vae_tiling"] is True
    frames = read_video(video["video"] if isinstance(video, dict) else video)
    expected = read_video(plain[0]["video"] if isinstance(plain[0], dict) else plain[0])
    assert frames.shape == expected.shape and abs(frames.astype(float) - expected.astype(float)).max() <= 2 / 255


def test_api_compare(client):
    c, _ = client
    base, fast, side, table = c.predict(PROMPT, "", *_settings(spec=SKIPPING), api_name="/compare")
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert set(rows) == {"baseline", "accelerated"} and float(rows["accelerated"]["ssim"]) <= 1
    for v in (base, fast, side):
        assert read_video(v["video"] if isinstance(v, dict) else v).shape[0] == 9


def test_api_batch(client):
    c, _ = client
    gallery, status, archive = c.predict(
        f"{PROMPT}\na green triangle standing still on a gray background", None, "", *_settings(), api_name="/batch"
    )
    assert len(gallery) == 2 and "2 videos done" in status
    with zipfile.ZipFile(archive) as zf:
        assert "manifest.jsonl" in zf.namelist() and len(zf.namelist()) == 3


def test_api_preset_fills_the_controls(client):
    c, _ = client
    result = c.predict("tiny-wan", "default", "balanced", *default_controls(), api_name="/preset")
    assert result[-1] != "none" and "teacache" in result[-1]


@pytest.mark.parametrize(
    "overrides, prompt, message",
    [
        ({}, "", "prompt"),
        (dict(frames=6), PROMPT, r"4k\+1"),
        (dict(steps=-3), PROMPT, "steps"),
        (dict(model="/no/such/model"), PROMPT, "no/such/model"),
        (dict(spec="teacache(threshold=abc)"), PROMPT, "threshold"),
    ],
)
def test_api_errors_are_readable_and_the_server_survives(client, overrides, prompt, message):
    c, _ = client
    with pytest.raises(Exception, match=message):
        c.predict(prompt, "", *_settings(**overrides), api_name="/generate")
    video, _, figures, _ = c.predict(PROMPT, "", *_settings(), api_name="/generate")  # still serving
    assert figures["num_frames"] == 9


def test_api_sends_the_decoder_in_every_tabs_request(served, monkeypatch):
    """The Decoder choice reaches the request of Generate, Compare, Batch and Stream (each Studio call is
    replaced by one that reports the decoder it got)."""
    studio, c = served.app.studio, served.client

    def report(request):
        raise InputError(f"decoder={request.decoder}")

    monkeypatch.setattr(studio, "generate", lambda session, model, request, **kw: report(request))
    monkeypatch.setattr(studio, "compare", lambda session, model, request: report(request))
    monkeypatch.setattr(studio, "batch", lambda session, model, items: report(items[0].request))
    monkeypatch.setattr(studio, "stream", lambda session, model, request, **kw: report(request))
    for decoder in ("light", "full"):
        for api, args in (
            ("/generate", (PROMPT, "", *_settings(decoder=decoder))),
            ("/compare", (PROMPT, "", *_settings(decoder=decoder))),
            ("/batch", (PROMPT, None, "", *_settings(decoder=decoder))),
            ("/stream", (PROMPT, "tiny-causal", 1, "", "", 0, decoder)),
        ):
            with pytest.raises(Exception, match=f"^decoder={decoder}$"):
                c.predict(*args, api_name=api)
    with pytest.raises(Exception) as refused:  # the page's choices only: never a path
        c.predict(PROMPT, "", *_settings(decoder="light:/etc/passwd"), api_name="/generate")
    assert "does not exist" not in str(refused.value) and "weights file" not in str(refused.value)


def test_api_cancel_stops_a_running_job_and_the_app_keeps_working(client):
    from gradio_client.utils import Status

    c, _ = client
    job = c.submit(PROMPT, "", *_settings(steps=1000), api_name="/generate")
    waited = threading.Event()
    for _ in range(600):  # until the job is running (at most ~30 s)
        if job.status().code == Status.PROGRESS:
            break
        waited.wait(0.05)
    assert c.predict(api_name="/cancel") is True
    with pytest.raises(Exception, match="Cancelled"):
        job.result(timeout=60)
    video, _, figures, _ = c.predict(PROMPT, "", *_settings(), api_name="/generate")
    assert figures["num_frames"] == 9


def test_studio_stream_switches_prompt_and_stops_keeping_the_video(studio):
    from genaccel.io.video import read_video

    other = "a yellow circle moving up on a gray background"
    events = studio.stream("s1", "tiny-causal", _request(steps=1))
    seen = []
    for kind, value in events:
        if kind == "chunk":
            seen.append(value["figures"])
            assert value["frames"].dtype == "uint8" and value["frames"].shape[1:] == (64, 64, 3)
            if len(seen) == 2:
                assert studio.switch_prompt("s1", other)
            if len(seen) == 4:
                assert studio.stop_stream("s1")
        elif kind == "done":
            done = value
    # the worker runs ahead of the page: the switch lands on the first chunk it starts after the call
    switched = [f["prompt"] for f in seen].index(other)
    assert switched >= 2 and seen[switched]["recached"] and all(f["prompt"] == other for f in seen[switched:])
    assert done["stopped"] and done["chunks"] == len(seen) >= 4 and done["frames"] == 1 + 4 * (len(seen) - 1)
    video = Path(done["video"])
    assert video.parent.parent == studio.output_dir and read_video(video).shape[0] == done["frames"]
    assert not studio.switch_prompt("s1", other) and not studio.stop_stream("s1")  # nothing runs any more


# ----------------------------------------------------------------------------- on a network
@pytest.mark.parametrize("model", ["/no/such/model", "{root}", "{root}/out/..", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"])
def test_api_refuses_models_not_offered_in_every_tab(served, model):
    model = model.format(root=served.root)
    loads = served.app.studio.pipelines.loads
    message = f"^model '{model}' is not offered on this server$"
    c = served.client
    for args, api in (
        ((PROMPT, "", *_settings(model=model)), "/generate"),
        ((model,), "/model_info"),
        ((PROMPT, model, 1, "", "", 0), "/stream"),
        ((PROMPT, "", *_settings(model=model)), "/compare"),
    ):
        with pytest.raises(Exception, match=message):
            c.predict(*args, api_name=api)
    assert served.app.studio.pipelines.loads == loads  # nothing was loaded


def test_api_refuses_requests_above_the_servers_limits(served):
    with pytest.raises(Exception, match=r"^Width 128 is above this server's limit of 64 \(--max-size\)$"):
        served.client.predict(PROMPT, "", *_settings(width=128), api_name="/generate")


def _get(app, path: str, method: str = "GET", body: bytes | None = None, headers=None):
    """The status and body of a raw request: the path goes out as written (no client normalises '..')."""
    connection = http.client.HTTPConnection(app.server_name, app.server_port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_api_cannot_skip_the_queue(served):
    body = json.dumps({"data": [PROMPT, "", *_settings()]}).encode()
    status, _ = _get(served.app, "/gradio_api/run/generate", "POST", body, {"Content-Type": "application/json"})
    assert status == 404  # Gradio's direct route would run it around the queue and its bound


def test_files_are_served_from_the_output_folder_only(served, tmp_path):
    import tempfile

    c, out, root = served.client, served.out, served.root
    c.predict(PROMPT, "", *_settings(), api_name="/generate")
    videos = [next(out.glob("generate-*/video.mp4")), next((out / ".gradio").rglob("*.mp4"))]
    secret = root / "secret.txt"
    secret.write_text("outside the output folder")
    (root / "examples").mkdir(exist_ok=True)
    (root / "examples" / "cached.txt").write_text("Gradio's examples cache")
    gradio_temp = Path(tempfile.gettempdir()) / "gradio" / f"genaccel-test-{os.getpid()}"  # Gradio's default
    gradio_temp.mkdir(parents=True, exist_ok=True)
    (gradio_temp / "other.txt").write_text("another Gradio app's file")
    (out / "link.txt").symlink_to(secret)
    (out / "generate-0000000000aa").mkdir(exist_ok=True)
    (out / "generate-0000000000aa" / "escape").symlink_to(root, target_is_directory=True)
    refused = [
        f"{secret}",
        f"{out}/../secret.txt",
        f"{out}/%2E%2E/secret.txt",
        f"{out}/.gradio/../../secret.txt",
        f"{out}/link.txt",
        f"{out}/generate-0000000000aa/escape/secret.txt",
        f"{root}/examples/cached.txt",
        f"{gradio_temp}/other.txt",
        "/etc/passwd",
        f"{out}",
    ]
    try:
        for path in refused:
            for route in ("/gradio_api/file=", "/gradio_api/file/"):
                status, body = _get(served.app, route + path)
                assert status in (403, 404), (route + path, status)
                assert b"outside" not in body and b"Gradio's" not in body
        for video in videos:
            status, body = _get(served.app, f"/gradio_api/file={video}")
            assert status == 200 and body == video.read_bytes()
    finally:
        for item in gradio_temp.iterdir():
            item.unlink()
        gradio_temp.rmdir()


def test_read_auth_pairs_and_files(tmp_path):
    from genaccel.ui.app import read_auth

    users = tmp_path / "users.txt"
    users.write_text("# who may log in\n\nbob:builder\ncarol:a:b:c\n")
    assert read_auth() is None
    assert read_auth("alice:secret") == [("alice", "secret")]
    assert read_auth(["alice:secret"], users) == [("alice", "secret"), ("bob", "builder"), ("carol", "a:b:c")]
    for bad in (["alice:secret", "nopassword"], [":secret"], ["alice:"]):
        with pytest.raises(InputError, match=r"^auth entry \d: expected user:password$"):
            read_auth(bad)
    (tmp_path / "empty.txt").write_text("# nobody\n")
    with pytest.raises(InputError, match="no user:password line"):
        read_auth(path=tmp_path / "empty.txt")
    with pytest.raises(InputError, match="cannot read the auth file"):
        read_auth(path=tmp_path / "missing.txt")


def test_auth_asks_for_a_password(tmp_path):
    from gradio_client import Client

    from genaccel.ui.app import launch

    users = tmp_path / "users.txt"
    users.write_text("bob:builder\n")
    app = launch(
        port=free_port(),
        model="tiny-wan",
        device="cpu",
        output_dir=str(tmp_path / "out"),
        block=False,
        auth="alice:open:sesame",
        auth_file=str(users),
    )
    try:
        for login in (None, ("alice", "wrong")):
            with pytest.raises(Exception):
                Client(app.local_url, auth=login, verbose=False)
        for login in (("alice", "open:sesame"), ("bob", "builder")):
            result = Client(app.local_url, auth=login, verbose=False).predict(
                "tiny-wan", "default", "balanced", *default_controls(), api_name="/preset"
            )
            assert "teacache" in result[-1]
        (tmp_path / "out" / "note.txt").write_text("in the output folder")
        status, _ = _get(app, f"/gradio_api/file={tmp_path / 'out' / 'note.txt'}")
        assert status in (401, 403)  # files too need the login
    finally:
        app.close()
