"""The web UI: its service layer in plain Python, and each tab's function through gradio_client."""

import json
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import free_port

from genaccel.errors import InputError, ModelError, SpecError
from genaccel.pipelines.families import FAMILIES
from genaccel.ui.controls import controls_from_spec, default_controls, spec_from_controls
from genaccel.ui.jobs import Cancelled, JobRunner, PipelineCache
from genaccel.request import request_from_options
from genaccel.ui.service import Studio
from genaccel.video_io import read_video

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
    from genaccel.batch import parse_items

    items = parse_items(f"{PROMPT}\na blue square moving up on a gray background\n")
    events = list(studio.batch("s", "tiny-wan", items))
    videos = [v for k, v in events if k == "item"]
    done = events[-1][1]
    assert len(videos) == 2 and done["done"] == 2
    with zipfile.ZipFile(done["zip"]) as zf:
        names = set(zf.namelist())
        manifest = [json.loads(l) for l in zf.read("manifest.jsonl").decode().splitlines()]
    assert names == {"manifest.jsonl", *(m["out"] for m in manifest)} and len(manifest) == 2


@pytest.mark.parametrize("options, error, message", [
    (dict(prompt="  "), InputError, "prompt"),
    (dict(frames=6), InputError, r"4k\+1"),
    (dict(steps=0), InputError, "steps"),
    (dict(guidance=99.0), InputError, "guidance"),
    (dict(width=31), InputError, "multiple"),
    (dict(accel="fastercache"), SpecError, "fastercache"),
    (dict(setting="huge"), InputError, "no 'huge' setting"),
    (dict(max_memory="10kB"), InputError, "more than the 0.0 MB it may use"),
    (dict(offload="disk"), InputError, "offload must be one of"),
    (dict(model="/no/such/folder"), ModelError, "no/such"),
])
def test_studio_rejects_bad_input_before_running(studio, options, error, message):
    before = set(studio.output_dir.iterdir())
    model = options.pop("model", "tiny-wan")
    with pytest.raises(error, match=message):
        list(studio.generate("s", model, request_from_options({"prompt": PROMPT, **options})))
    assert set(studio.output_dir.iterdir()) == before  # nothing half-written


# ----------------------------------------------------------------------------- gradio_client
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    from genaccel.ui.app import launch

    out = tmp_path_factory.mktemp("ui-app")
    app = launch(port=free_port(), model="tiny-wan", device="cpu", output_dir=str(out), block=False)
    assert app.server_name == "127.0.0.1"  # localhost unless asked
    yield Client(app.local_url, verbose=False), out
    app.close()


def _settings(**overrides):
    values = dict(model="tiny-wan", setting="default", width=32, height=32, frames=9, steps=4, guidance=5.0, seed=0,
                  spec="none", offload="none", tiling=False)
    values.update(overrides)
    return [values[k] for k in ("model", "setting", "width", "height", "frames", "steps", "guidance", "seed", "spec",
                                "offload", "tiling")]


def test_api_generate(client):
    c, out = client
    video, download, figures = c.predict(PROMPT, "", *_settings(spec=SKIPPING), api_name="/generate")
    path = video["video"] if isinstance(video, dict) else video
    assert read_video(path).shape[0] == 9 == figures["num_frames"]
    assert figures["num_inference_steps"] == 4 and figures["skipped_calls"] > 0 and figures["accel"].startswith("teacache")
    # The server wrote the video (and Gradio its served copy) inside its output folder.
    assert list(out.glob("generate-*/video.mp4")) and list((out / ".gradio").rglob("*.mp4"))


def test_api_generate_with_offloading_and_tiling(client):
    c, _ = client
    plain = c.predict(PROMPT, "", *_settings(), api_name="/generate")
    video, _, figures = c.predict(PROMPT, "", *_settings(offload="group", tiling=True), api_name="/generate")
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
    gallery, status, archive = c.predict(f"{PROMPT}\na green triangle standing still on a gray background", None, "",
                                         *_settings(), api_name="/batch")
    assert len(gallery) == 2 and "2 videos done" in status
    with zipfile.ZipFile(archive) as zf:
        assert "manifest.jsonl" in zf.namelist() and len(zf.namelist()) == 3


def test_api_preset_fills_the_controls(client):
    c, _ = client
    result = c.predict("tiny-wan", "balanced", *default_controls(), api_name="/preset")
    assert result[-1] != "none" and "teacache" in result[-1]


@pytest.mark.parametrize("overrides, prompt, message", [
    ({}, "", "prompt"),
    (dict(frames=6), PROMPT, r"4k\+1"),
    (dict(steps=-3), PROMPT, "steps"),
    (dict(model="/no/such/model"), PROMPT, "no/such/model"),
    (dict(spec="teacache(threshold=abc)"), PROMPT, "threshold"),
])
def test_api_errors_are_readable_and_the_server_survives(client, overrides, prompt, message):
    c, _ = client
    with pytest.raises(Exception, match=message):
        c.predict(prompt, "", *_settings(**overrides), api_name="/generate")
    video, _, figures = c.predict(PROMPT, "", *_settings(), api_name="/generate")  # still serving
    assert figures["num_frames"] == 9


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
    video, _, figures = c.predict(PROMPT, "", *_settings(), api_name="/generate")
    assert figures["num_frames"] == 9


def test_studio_stream_switches_prompt_and_stops_keeping_the_video(studio):
    from genaccel.video_io import read_video

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
