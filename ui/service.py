"""What the web UI does, as plain Python over genaccel's API (the Gradio layer only wires it up).

Every file the UI writes goes into a fresh folder under `output_dir`, named by the server; no
path from the page is ever written to or read from: a visitor chooses among the models the operator
offers and between the full and the light decoder the model ships (never a weights file by path),
and every request is held to the server's `UILimits` before it waits for the device, so the
same rules hold for the page and for API callers. A generation can show live previews: every K
denoising steps, the current estimate of the video through the model's light decoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from genaccel.errors import InputError
from genaccel.generation.generate import GenerationResult
from genaccel.generation.prepare import PreparedRequest, prepare
from genaccel.generation.request import GenerationRequest, parse_size
from genaccel.io.files import replace_atomic
from genaccel.io.video import preview_strip
from genaccel.ui.jobs import Cancelled, Job, JobRunner, PipelineCache

# What the page shows of a run's summary (GenerationResult.summary keys).
FIGURES = (
    "accel",
    "seconds",
    "denoise_seconds",
    "decode_seconds",
    "transformer_calls",
    "skipped_calls",
    "attention_calls",
    "attention_reused",
    "num_frames",
    "height",
    "width",
    "num_inference_steps",
    "seed",
    "offload",
    "vae_tiling",
    "estimated_peak_bytes",
    "decoder",
    "accelerator_stats",
    "previews",  # only in a run that made previews
    "preview_seconds",
)
COMPARE_COLUMNS = ["run", "accel", "decoder", "seconds", "speedup", "skipped_passes", "psnr_db", "ssim", "adherence"]

# What a visitor may choose to decode with: the model's VAE or the light decoder it ships. The request's third
# form, light:PATH, names a file on the server: never taken from the page or the API.
DECODERS = ("full", "light")


def figures(result: GenerationResult) -> dict[str, Any]:
    """The run's figures as the page shows them."""
    summary = result.summary()
    return {k: summary[k] for k in FIGURES if k in summary}


def check_decoder(value: Any) -> str:
    """The decoder a visitor chose, "full" or "light" (None or empty: "full"); InputError for anything else,
    a weights path above all: the page never names a file on the server."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "full"
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in DECODERS:
        raise InputError("The decoder must be full or light on this server")
    return text


def check_preview_every(value: Any) -> int:
    """The preview interval in denoising steps, a whole number: 0 (or empty) is no previews."""
    if value is None or value == "":
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"Preview every K steps must be a whole number, 0 for no previews; got {value!r}")
    return value


def light_decoder_note(pipe, family) -> str:
    """Why `pipe` has no light decoder to offer (its family has none, it ships none, it does not load); "" when
    it has one. The words name no file: a visitor sees them."""
    from genaccel.decoding.light import light_decoder_for

    if not family.light_decoders:
        return f"{family.title} has no light decoder"
    try:
        light = light_decoder_for(pipe, family, "full", for_preview=True)
    except InputError:
        return "the light decoder this model ships does not load"
    return "" if light is not None else "this model ships no light decoder"


# ----------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class UILimits:
    """What one request may ask of this server (None: no limit), checked before the request waits for
    the device, for the page and API callers alike. Each message names its `genaccel ui` option.

    The defaults let the supported families run their usual checkpoints at native size (Wan 2.1 and
    HunyuanVideo at 1280x720; up to 257 frames, a 4k+1 and 8k+1 count of about 10 s at 24 fps) and
    refuse what would hold a shared device for hours: a request itself may ask for 4096 px, 1024
    frames and 1000 steps, and a 4096x4096 one held the only slot for minutes at 9 GB.
    """

    max_size: int | None = 1280  # pixels per side (height and width)
    max_frames: int | None = 257
    max_steps: int | None = 100  # usual schedules take 4 to 50 steps
    max_batch: int | None = 32  # prompts in one batch run: the run holds the device for all of them
    max_prompt: int | None = 2000  # characters: text encoders read 226 to 512 tokens, about this much text
    max_chunks: int | None = 64  # chunks in one stream (about 257 frames at 4 a chunk); "until stopped" ends here
    max_memory: str | None = None  # what one run may use on the device, e.g. "20GB" (None: what is free there)

    def __post_init__(self):
        for name in ("max_size", "max_frames", "max_steps", "max_batch", "max_prompt", "max_chunks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{_option(name)} must be a whole number of at least 1; got {value!r}")
        if self.max_memory is not None:
            parse_size(self.max_memory, _option("max_memory"))

    def check(self, request: GenerationRequest, where: str = "") -> None:
        """InputError naming the first value of `request` above a limit (unset values are left to the
        model: they are checked again once `prepare` has filled them in)."""
        for label, value, name in (
            ("Height", request.height, "max_size"),
            ("Width", request.width, "max_size"),
            ("Frames", request.num_frames, "max_frames"),
            ("Steps", request.num_inference_steps, "max_steps"),
        ):
            self._check_number(label, value, name, where)
        self.check_prompt(request.prompt, "The prompt", where)
        self.check_prompt(request.negative_prompt, "The negative prompt", where)

    def check_prompt(self, text: str, label: str = "The prompt", where: str = "") -> None:
        """InputError when `text` is longer than max_prompt characters."""
        if self.max_prompt is not None and len(text or "") > self.max_prompt:
            raise InputError(
                f"{where}{label} is {len(text)} characters long, above this server's limit of "
                f"{self.max_prompt} ({_option('max_prompt')})"
            )

    def check_batch(self, items) -> None:
        """InputError when a batch has more than max_batch items or an item asks for more than the limits."""
        if self.max_batch is not None and len(items) > self.max_batch:
            raise InputError(
                f"The batch has {len(items)} prompts, above this server's limit of {self.max_batch} "
                f"({_option('max_batch')})"
            )
        for item in items:
            self.check(item.request, item.where)

    def check_chunks(self, chunks: int | None) -> None:
        """InputError when a stream asks for more than max_chunks chunks (None or 0: until stopped)."""
        self._check_number("Chunks", chunks, "max_chunks")

    def _check_number(self, label: str, value, name: str, where: str = "") -> None:
        limit = getattr(self, name)
        if value is not None and limit is not None and value > limit:
            raise InputError(f"{where}{label} {value} is above this server's limit of {limit} ({_option(name)})")


def _option(name: str) -> str:
    """The `genaccel ui` option that sets a limit (max_size -> --max-size)."""
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- models
def not_offered(model: Any) -> InputError:
    """The one refusal for every model outside the offered list: the same words whether the name is a
    folder, a hub id or nonsense, so it tells nothing about this machine."""
    text = " ".join(str(model).split())
    return InputError(f"model '{text[:60] + '...' if len(text) > 63 else text}' is not offered on this server")


def offered_models(default: str, models=None) -> list[str]:
    """The models a visitor may choose: `models` (default: the built-in ones), the default model first."""
    from genaccel.models.facts import builtin_models

    names = [str(m).strip() for m in (builtin_models() if models is None else models)]
    return list(dict.fromkeys(m for m in (default, *names) if m))


def can_stream(model: str) -> bool:
    """Whether a model streams (its genaccel.toml has a [stream] table), read without loading it."""
    from genaccel.errors import ModelError
    from genaccel.models.facts import EMBEDDED_CAUSAL, MODEL_SETTINGS_FILE
    from genaccel.models.files import read_toml

    if model == EMBEDDED_CAUSAL:
        return True
    try:
        return "stream" in read_toml(Path(model).expanduser() / MODEL_SETTINGS_FILE)
    except (ModelError, RuntimeError, ValueError):  # no such folder (a hub id, a tiny name, ~nobody), or not TOML
        return False


# ----------------------------------------------------------------------------- output folders
# The folders a Studio makes under its output folder: the only things its clean-up may remove.
JOB_FOLDER = re.compile(r"(generate|compare|batch|stream)-[0-9a-f]{12}")


def _newest_change(folder: Path) -> float:
    """The latest modification time of a folder and everything in it (links not followed)."""
    newest = folder.lstat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


def check_keep_hours(keep_hours) -> float:
    """The age (hours) at which job folders are removed: 0 (keep forever) or more, finite."""
    if keep_hours is None or not math.isfinite(keep_hours) or keep_hours < 0:
        raise InputError(f"--keep-hours must be 0 (keep forever) or more; got {keep_hours!r}")
    return keep_hours


class Studio:
    """The UI's state: a pipeline cache, the job runner, the output folder, the offered models and the limits.

    `models`: the model names a visitor may choose (default: the default model and the built-in ones);
    `limits`: what one request may ask (UILimits); `keep_hours`: job folders older than this are
    removed when the next job starts (0: kept forever).
    """

    def __init__(
        self,
        output_dir: str | Path,
        default_model: str | None = None,
        device: str = "auto",
        cache: PipelineCache | None = None,
        *,
        models=None,
        limits: UILimits | None = None,
        keep_hours: float = 24.0,
    ):
        from genaccel.models.facts import default_model as builtin_default

        check_keep_hours(keep_hours)
        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        given = [m for m in (models or ()) if str(m).strip()]
        self.default_model = (default_model or (str(given[0]) if given else builtin_default())).strip()
        self.models = offered_models(self.default_model, models)
        self.stream_models = [m for m in self.models if can_stream(m)]
        self.limits = limits or UILimits()
        self.keep_hours = keep_hours
        self.device = device
        self.pipelines = cache or PipelineCache()
        self.jobs = JobRunner()
        self._warm: set[int] = set()  # pipelines (by id) that have run once: no first-call costs left
        self._streams: dict[str, Any] = {}  # session -> its running genaccel.streaming Stream
        self._stops: dict[str, threading.Event] = {}  # session -> "stop after this chunk"
        self._live: set[Path] = set()  # folders of running jobs: never cleaned up
        self._folders = threading.Lock()
        self.cleanup()  # what an earlier server left in a reused output folder

    # ------------------------------------------------------------------ models
    def check_model(self, model: Any) -> str:
        """The offered model's name, else InputError (the same refusal for anything not offered)."""
        if model is None or (isinstance(model, str) and not model.strip()):
            raise InputError("Please choose a model.")
        if not isinstance(model, str) or model.strip() not in self.models:
            raise not_offered(model)
        return model.strip()

    def pipeline(self, model: str):
        """The loaded pipeline of an offered model; nothing is loaded for any other name."""
        return self.pipelines.get(self.check_model(model), self.device)

    def model_info(self, model: str) -> dict[str, Any]:
        """Family, defaults of each setting, and which accelerators the model's family supports."""
        from genaccel.accelerators import unsupported_by
        from genaccel.models.facts import ModelFacts
        from genaccel.models.presets import preset_names

        pipe = self.pipeline(model)
        facts = ModelFacts.of(pipe)  # the model's profiles, read once for this answer
        family = facts.family
        settings = facts.settings()
        return {
            "model": model,
            "family": family.name,
            "title": family.title,
            "key": facts.key,
            "settings": {name: facts.setting_defaults(name) for name in settings},
            # built-in presets and those tuned for this model (`genaccel tune --save-as`), per setting
            "presets": {name: preset_names(facts.key, name, profiles=facts.profiles) for name in settings},
            "preset_specs": {name: facts.presets(name) for name in settings},
            "frames_rule": family.frames_rule(pipe),
            "unsupported": unsupported_by(family),
            # why "light" cannot be chosen (and no live previews are made); "" when the model ships a light decoder
            "light_decoder_note": light_decoder_note(pipe, family),
        }

    # ------------------------------------------------------------------ output folders
    def cleanup(self, now: float | None = None) -> list[Path]:
        """Remove the job folders this server makes (`{kind}-{hex}` right under output_dir) whose newest file
        is older than keep_hours, except those of running jobs; nothing else is touched. Returns them."""
        if not self.keep_hours:
            return []
        cutoff = (time.time() if now is None else now) - self.keep_hours * 3600
        with self._folders:
            live = set(self._live)
        removed = []
        try:
            entries = list(self.output_dir.iterdir())
        except OSError:
            return []
        for path in entries:
            if not JOB_FOLDER.fullmatch(path.name) or path.is_symlink() or not path.is_dir() or path in live:
                continue
            # A folder's own time is a cheap lower bound of its newest change: recent ones are not walked.
            if path.lstat().st_mtime < cutoff and _newest_change(path) < cutoff:
                shutil.rmtree(path, ignore_errors=True)  # links inside are removed, never followed
                removed.append(path)
        return removed

    def _job_dir(self, kind: str) -> Path:
        self.cleanup()  # the disk fills only when a job writes: old folders make way first
        path = self.output_dir / f"{kind}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        with self._folders:
            self._live.add(path)
        return path

    def _run(self, session: str, kind: str, work) -> Iterator[tuple[str, Any]]:
        """Run `work(job, folder)` once the device is free; `folder` is the job's own new output folder, kept
        from the clean-up while the job runs and removed again if the job fails before writing anything."""

        def in_folder(job: Job):
            folder = self._job_dir(kind)
            try:
                return work(job, folder)
            except BaseException:
                with contextlib.suppress(OSError):  # a failed or cancelled job that wrote nothing leaves nothing
                    if not any(folder.iterdir()):
                        folder.rmdir()
                raise
            finally:
                with self._folders:
                    self._live.discard(folder)

        yield from self.jobs.run(session, self.device, in_folder)

    # ------------------------------------------------------------------ checks
    def _budgeted(self, pipe, request: GenerationRequest) -> GenerationRequest:
        """The request under this server's memory budget (--max-memory, and what the device has): a caller
        may ask for less memory (max_memory), never for more, so the memory check of `prepare` holds."""
        asked = [parse_size(value, "max_memory") for value in (self.limits.max_memory, request.max_memory) if value]
        if not asked:
            return request  # prepare checks against what the device has free
        from genaccel.memory.estimate import device_budget
        from genaccel.memory.offload import target_device

        budget = min(*asked, device_budget(pipe, target_device(pipe)))
        return dataclasses.replace(request, max_memory=str(budget))

    @staticmethod
    def _check_light(pipe, name: str, request: GenerationRequest, where: str = "") -> None:
        """InputError when the request asks for the light decoder and the model has none to offer (in the page's
        words: `prepare`'s would suggest a weights path, which the page does not take)."""
        from genaccel.pipelines.families import family_of

        if request.decoder == "light":
            note = light_decoder_note(pipe, family_of(pipe))
            if note:
                raise InputError(f"{where}The light decoder is not available for {name}: {note}; choose full")

    def _prepare(self, model: str, request: GenerationRequest) -> tuple[Any, PreparedRequest]:
        """Check the model, the decoder and the limits, load (or reuse) the model and prepare the request: every
        error comes before the job waits for the device."""
        name = self.check_model(model)
        check_decoder(request.decoder)  # before anything is loaded: a path is refused, never looked at
        self.limits.check(request)
        pipe = self.pipelines.get(name, self.device)
        self._check_light(pipe, name, request)
        prepared = prepare(pipe, self._budgeted(pipe, request))
        self.limits.check(prepared.request)  # the model's defaults count too: a setting may be larger
        return pipe, prepared

    @staticmethod
    def _step_reporter(job: Job, label: str):
        def on_step(step: int, total: int | None) -> None:
            job.check()  # cancellation takes effect between denoising steps
            job.emit("progress", (step, total, label))

        return on_step

    # ------------------------------------------------------------------ generation
    def generate(
        self, session: str, model: str, request: GenerationRequest, *, preview_every: int = 0
    ) -> Iterator[tuple[str, Any]]:
        """Events ("progress", (step, total, label)) then ("done", {"video", "figures"}).

        With `preview_every` K > 0 and a model that ships a light decoder, ("previewing", {"every": K}) comes
        first (previews will follow), then ("preview", {"image", "step", "total"}) every K denoising steps: the
        current estimate of the video through the light decoder, its frames side by side (a uint8 image,
        `preview_strip`). A model without a light decoder makes no previews, and that is no error."""
        from genaccel.generation.generate import generate
        from genaccel.io.video import write_video

        every = check_preview_every(preview_every)
        pipe, prepared = self._prepare(model, request)
        if every and light_decoder_note(pipe, prepared.family):
            every = 0  # nothing to preview with: the video alone, as without previews
        if every:
            yield "previewing", {"every": every}

        def work(job: Job, folder: Path):
            def on_preview(shown) -> None:
                job.emit("preview", {"image": preview_strip(shown.frames), "step": shown.step, "total": shown.total})

            previews = dict(preview=on_preview, preview_every=every) if every else {}
            result = generate(pipe, prepared, callback=self._step_reporter(job, ""), **previews)
            self._warm.add(id(pipe))
            video = write_video(result.frames, folder / "video.mp4")
            return {"video": str(video), "figures": figures(result)}

        yield from self._run(session, "generate", work)

    def compare(self, session: str, model: str, request: GenerationRequest) -> Iterator[tuple[str, Any]]:
        """The bench on one prompt and seed: baseline and the request's accelerators (and decoder); ("done",
        {"baseline", "accelerated", "side_by_side", "rows"}) at the end, rows as COMPARE_COLUMNS. The baseline
        is always decoded with the full decoder: PSNR and SSIM are against the video as the model makes it."""
        from genaccel.pipelines.score import scorer_named
        from genaccel.tools.bench import BenchPlan, run_bench, summarize
        from genaccel.tools.bench.runner import video_path

        pipe, prepared = self._prepare(model, request)
        light = request.decoder == "light"
        if (prepared.spec is None or prepared.spec.text == "none") and not light:
            raise InputError("Choose accelerators (a preset or the toggles) to compare with the baseline.")
        request = dataclasses.replace(request, max_memory=prepared.request.max_memory)  # the server's budget
        # The bench decodes its baseline with the full decoder whatever the shared request says; naming the
        # decoder in the configuration also keeps "none" with the light decoder apart from the baseline.
        configuration = f"{request.accel}; decoder=light" if light else request.accel

        def work(job: Job, folder: Path):
            # A pipeline's first run pays one-time costs; the bench's warm-up keeps them off the baseline.
            plan = BenchPlan(
                accels=[configuration],
                prompts=[request.prompt],
                seeds=[request.seed],
                request=request,
                warmup=0 if id(pipe) in self._warm else 1,
                memory="off",
            )
            rows = run_bench(
                pipe, plan, folder, progress=False, callback=self._step_reporter(job, "compare"), save_videos=True
            )
            self._warm.add(id(pipe))
            scorer = scorer_named(plan.scorer)
            table = []
            for row, summary in zip(sorted(rows, key=lambda r: r["config"]), summarize(rows, plan)):
                baseline = row["config"] == 0
                table.append(
                    {
                        "run": "baseline" if baseline else "accelerated",
                        "accel": row["resolved"],
                        "decoder": row["decoder"],
                        "seconds": round(row["seconds"], 3),
                        "speedup": round(summary["speedup"], 3),
                        "skipped_passes": f"{row['skipped_calls']}/{row['transformer_calls']}",
                        "psnr_db": None if baseline else "identical" if row["identical"] else round(row["psnr"], 2),
                        "ssim": None if baseline else round(row["ssim"], 4),
                        "adherence": scorer.describe(row["adherence"]) if row["adherence"] else None,
                    }
                )
            return {
                "baseline": str(video_path(folder, 0)),
                "accelerated": str(video_path(folder, 1)),
                "side_by_side": str(folder / "compare.mp4"),
                "rows": table,
            }

        yield from self._run(session, "compare", work)

    @staticmethod
    def batch_items(
        text: str | None = None, upload: str | Path | None = None, base: GenerationRequest | None = None
    ) -> list:
        """A batch's items from the page: an uploaded .txt/.jsonl file, else the prompts box's text (one prompt a
        line), each over `base`. A .jsonl line may name a decoder; one that is not full or light is refused
        (`check_decoder`) before anything looks at the file it names."""
        from genaccel.generation.batch import parse_items, read_prompts_text

        if upload:
            path = Path(upload)
            text, kind, source = read_prompts_text(path), path.suffix.lower(), path.name
        else:
            text, kind, source = text or "", ".txt", "the prompts box"
        items = parse_items(text, kind, source=source, base=base)
        for item in items:
            try:
                check_decoder(item.request.decoder)
            except InputError as exc:
                raise InputError(f"{item.where}{exc}") from None
        return items

    def batch(self, session: str, model: str, items) -> Iterator[tuple[str, Any]]:
        """Events ("item", {"video", "prompt", "index"}) as videos finish, then ("done", {"zip", "manifest", ...})."""
        from genaccel.generation.batch import MANIFEST, prepare_items, run_batch

        name = self.check_model(model)
        for item in items:  # a .jsonl line may name a decoder too: a path is refused, never looked at
            try:
                check_decoder(item.request.decoder)
            except InputError as exc:
                raise InputError(f"{item.where}{exc}") from None
        self.limits.check_batch(items)  # before anything is loaded
        pipe = self.pipelines.get(name, self.device)
        for item in items:
            self._check_light(pipe, name, item.request, item.where)
        items = [dataclasses.replace(item, request=self._budgeted(pipe, item.request)) for item in items]
        prepared = prepare_items(pipe, items)  # errors before the job is queued
        for item, ready in zip(items, prepared):
            self.limits.check(ready.request, item.where)

        def work(job: Job, folder: Path):
            def on_item(entry, path):
                job.emit("item", {"video": str(path), "prompt": entry["prompt"], "index": entry["index"]})

            summary = run_batch(
                pipe,
                items,
                folder,
                progress=False,
                on_item=on_item,
                prepared=prepared,
                step_callback=self._step_reporter(job, "batch"),
            )
            self._warm.add(id(pipe))
            archive, partial = folder / "videos.zip", folder / ".videos.zip.partial"
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
                for line in (folder / MANIFEST).read_text().splitlines():
                    zf.write(folder / json.loads(line)["out"], json.loads(line)["out"])
                zf.write(folder / MANIFEST, MANIFEST)
            replace_atomic(partial, archive)  # under its name only when complete
            return {**summary, "zip": str(archive)}

        yield from self._run(session, "batch", work)

    def stream(
        self,
        session: str,
        model: str,
        request: GenerationRequest,
        *,
        chunks: int | None = None,
        window: int | None = None,
        sink: int | None = None,
        fps: int = 8,
    ) -> Iterator[tuple[str, Any]]:
        """A causal model's stream: ("chunk", {"frames", "figures"}) per chunk (uint8 frames for the page's live
        view), then ("done", {"video", "chunks", "frames", "stopped"}) with the whole stream as one .mp4, also
        when stopped early (`stop_stream`). Without `chunks` (or 0) it runs until stopped or the server's
        max_chunks. The request's decoder ("full" or "light") decodes each chunk."""
        from genaccel.generation.stream import prepare_stream, stream
        from genaccel.io.video import StreamWriter, to_uint8

        name = self.check_model(model)
        check_decoder(request.decoder)
        self.limits.check(request)
        if chunks is not None and chunks < 1:
            chunks = None  # until stopped
        self.limits.check_chunks(chunks)
        pipe = self.pipelines.get(name, self.device)
        self._check_light(pipe, name, request)
        prepared = prepare_stream(pipe, self._budgeted(pipe, request), window=window, sink=sink)  # errors now
        self.limits.check(prepared.request)
        chunks = chunks or self.limits.max_chunks  # "until stopped" ends at the server's limit
        stop = threading.Event()

        def work(job: Job, folder: Path):
            writer = StreamWriter(folder / "stream.mp4", fps=fps)
            running = stream(pipe, prepared, chunks=chunks)
            self._streams[session], self._stops[session] = running, stop
            made = frames = 0
            try:
                for chunk in running:
                    writer.write(chunk.frames)
                    made, frames = made + 1, frames + len(chunk.frames)
                    job.emit("chunk", {"frames": to_uint8(chunk.frames), "figures": chunk.summary()})
                    if stop.is_set():
                        break
                    job.check()
            finally:
                running.close()
                video = writer.close()
                if self._streams.get(session) is running:
                    del self._streams[session], self._stops[session]
            return {"video": str(video) if video else None, "chunks": made, "frames": frames, "stopped": stop.is_set()}

        yield from self._run(session, "stream", work)

    def switch_prompt(self, session: str, prompt: str) -> bool:
        """Change the running stream's prompt from its next chunk on; False when the session streams nothing."""
        self.limits.check_prompt(prompt)
        running = self._streams.get(session)
        if running is None:
            return False
        running.switch_prompt(prompt)
        return True

    def stop_stream(self, session: str) -> bool:
        """End the session's stream after the chunk being made (its video is kept); False if none runs."""
        stop = self._stops.get(session)
        if stop is None:
            return False
        stop.set()
        return True

    def cancel(self, session: str) -> bool:
        """Stop the session's running or waiting job at its next denoising step (True if it had one)."""
        return self.jobs.cancel(session)


__all__ = [
    "COMPARE_COLUMNS",
    "DECODERS",
    "Cancelled",
    "Studio",
    "UILimits",
    "check_decoder",
    "check_preview_every",
    "figures",
    "light_decoder_note",
    "not_offered",
]
