"""What the web UI does, as plain Python over genaccel's API (the Gradio layer only wires it up).

Every file the UI writes goes into a fresh folder under `output_dir`, named by the server; no
path from the page is ever written to.
"""

from __future__ import annotations

import json
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

from genaccel.errors import InputError
from genaccel.generate import GenerationResult
from genaccel.pipelines.families import family_of
from genaccel.prepare import PreparedRequest, model_defaults, model_settings, prepare
from genaccel.request import GenerationRequest

from genaccel.ui.jobs import Cancelled, Job, JobRunner, PipelineCache

# What the page shows of a run's summary (GenerationResult.summary keys).
FIGURES = ("accel", "seconds", "denoise_seconds", "decode_seconds", "transformer_calls", "skipped_calls",
           "attention_calls", "attention_reused", "num_frames", "height", "width", "num_inference_steps", "seed",
           "offload", "vae_tiling", "estimated_peak_bytes", "accelerator_stats")
COMPARE_COLUMNS = ["run", "accel", "seconds", "speedup", "skipped_passes", "psnr_db", "ssim", "adherence"]


def figures(result: GenerationResult) -> dict[str, Any]:
    """The run's figures as the page shows them."""
    summary = result.summary()
    return {k: summary[k] for k in FIGURES}


class Studio:
    """The UI's state: a pipeline cache, the job runner and the output folder."""

    def __init__(self, output_dir: str | Path, default_model: str | None = None, device: str = "auto",
                 cache: PipelineCache | None = None):
        from genaccel.models import default_model as builtin_default

        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.default_model = default_model or builtin_default()
        self.device = device
        self.pipelines = cache or PipelineCache()
        self.jobs = JobRunner()
        self._warm: set[int] = set()  # pipelines (by id) that have run once: no first-call costs left
        self._streams: dict[str, Any] = {}  # session -> its running genaccel.streaming Stream
        self._stops: dict[str, threading.Event] = {}  # session -> "stop after this chunk"

    # ------------------------------------------------------------------ models
    def pipeline(self, model: str):
        if not (model or "").strip():
            raise InputError("Please choose a model.")
        return self.pipelines.get(model.strip(), self.device)

    def model_info(self, model: str) -> dict[str, Any]:
        """Family, defaults of each setting, and which accelerators the model's family supports."""
        from genaccel.accelerators import unsupported_by
        from genaccel.profiles import pipeline_model_key

        pipe = self.pipeline(model)
        family = family_of(pipe)
        return {
            "model": model,
            "family": family.name,
            "title": family.title,
            "key": pipeline_model_key(pipe),
            "settings": {name: model_defaults(pipe, name) for name in model_settings(pipe)},
            "frames_rule": family.frames_rule(pipe),
            "unsupported": unsupported_by(family),
        }

    def _job_dir(self, kind: str) -> Path:
        path = self.output_dir / f"{kind}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def _prepare(self, model: str, request: GenerationRequest) -> tuple[Any, PreparedRequest]:
        """Load (or reuse) the model and prepare the request: every error before a job is queued."""
        pipe = self.pipeline(model)
        return pipe, prepare(pipe, request)

    @staticmethod
    def _step_reporter(job: Job, label: str):
        def on_step(step: int, total: int | None) -> None:
            job.check()  # cancellation takes effect between denoising steps
            job.emit("progress", (step, total, label))

        return on_step

    # ------------------------------------------------------------------ generation
    def generate(self, session: str, model: str, request: GenerationRequest) -> Iterator[tuple[str, Any]]:
        """Events ("progress", (step, total, label)) then ("done", {"video", "figures"})."""
        from genaccel.generate import generate
        from genaccel.video_io import write_video

        pipe, prepared = self._prepare(model, request)

        def work(job: Job):
            result = generate(pipe, prepared, callback=self._step_reporter(job, ""))
            self._warm.add(id(pipe))
            video = write_video(result.frames, self._job_dir("generate") / "video.mp4")
            return {"video": str(video), "figures": figures(result)}

        yield from self.jobs.run(session, self.device, work)

    def compare(self, session: str, model: str, request: GenerationRequest) -> Iterator[tuple[str, Any]]:
        """The bench on one prompt and seed: baseline and the request's accelerators; ("done", {"baseline",
        "accelerated", "side_by_side", "rows"}) at the end, rows as COMPARE_COLUMNS."""
        from genaccel.bench import BenchPlan, run_bench, summarize
        from genaccel.bench.runner import video_path
        from genaccel.score import scorer_named

        pipe, prepared = self._prepare(model, request)
        if prepared.spec is None or prepared.spec.text == "none":
            raise InputError("Choose accelerators (a preset or the toggles) to compare with the baseline.")

        def work(job: Job):
            # A pipeline's first run pays one-time costs; the bench's warm-up keeps them off the baseline.
            plan = BenchPlan(accels=[request.accel], prompts=[request.prompt], seeds=[request.seed], request=request,
                             warmup=0 if id(pipe) in self._warm else 1, memory="off")
            folder = self._job_dir("compare")
            rows = run_bench(pipe, plan, folder, progress=False, callback=self._step_reporter(job, "compare"),
                             save_videos=True)
            self._warm.add(id(pipe))
            scorer = scorer_named(plan.scorer)
            table = []
            for row, summary in zip(sorted(rows, key=lambda r: r["config"]), summarize(rows, plan)):
                baseline = row["config"] == 0
                table.append({
                    "run": "baseline" if baseline else "accelerated", "accel": row["resolved"],
                    "seconds": round(row["seconds"], 3), "speedup": round(summary["speedup"], 3),
                    "skipped_passes": f"{row['skipped_calls']}/{row['transformer_calls']}",
                    "psnr_db": None if baseline else "identical" if row["identical"] else round(row["psnr"], 2),
                    "ssim": None if baseline else round(row["ssim"], 4),
                    "adherence": scorer.describe(row["adherence"]) if row["adherence"] else None,
                })
            return {"baseline": str(video_path(folder, 0)), "accelerated": str(video_path(folder, 1)),
                    "side_by_side": str(folder / "compare.mp4"), "rows": table}

        yield from self.jobs.run(session, self.device, work)

    def batch(self, session: str, model: str, items) -> Iterator[tuple[str, Any]]:
        """Events ("item", {"video", "prompt", "index"}) as videos finish, then ("done", {"zip", "manifest", ...})."""
        from genaccel.batch import MANIFEST, prepare_items, run_batch

        pipe = self.pipeline(model)
        prepared = prepare_items(pipe, items)  # errors before the job is queued

        def work(job: Job):
            folder = self._job_dir("batch")

            def on_item(entry, path):
                job.emit("item", {"video": str(path), "prompt": entry["prompt"], "index": entry["index"]})

            summary = run_batch(pipe, items, folder, progress=False, on_item=on_item, prepared=prepared,
                                step_callback=self._step_reporter(job, "batch"))
            self._warm.add(id(pipe))
            archive = folder / "videos.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for line in (folder / MANIFEST).read_text().splitlines():
                    zf.write(folder / json.loads(line)["out"], json.loads(line)["out"])
                zf.write(folder / MANIFEST, MANIFEST)
            return {**summary, "zip": str(archive)}

        yield from self.jobs.run(session, self.device, work)

    def stream(self, session: str, model: str, request: GenerationRequest, *, chunks: int | None = None,
               window: int | None = None, sink: int | None = None, fps: int = 8) -> Iterator[tuple[str, Any]]:
        """A causal model's stream: ("chunk", {"frames", "figures"}) per chunk (uint8 frames for the page's live
        view), then ("done", {"video", "chunks", "frames", "stopped"}) with the whole stream as one .mp4, also
        when stopped early (`stop_stream`)."""
        from genaccel.streaming.generator import prepare_stream, stream
        from genaccel.video_io import StreamWriter, to_uint8

        pipe = self.pipeline(model)
        prepared = prepare_stream(pipe, request, window=window, sink=sink)  # errors before the job is queued
        if chunks is not None and chunks < 1:
            chunks = None  # until stopped
        stop = threading.Event()

        def work(job: Job):
            folder = self._job_dir("stream")
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
            return {"video": str(video) if video else None, "chunks": made, "frames": frames,
                    "stopped": stop.is_set()}

        yield from self.jobs.run(session, self.device, work)

    def switch_prompt(self, session: str, prompt: str) -> bool:
        """Change the running stream's prompt from its next chunk on; False when the session streams nothing."""
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
        return self.jobs.cancel(session)


__all__ = ["COMPARE_COLUMNS", "Cancelled", "Studio", "figures"]
