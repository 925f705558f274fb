"""What the web UI does, as plain Python over genaccel's API (the Gradio layer only wires it up).

Every file the UI writes goes into a fresh folder under `output_dir`, named by the server; no
path from the page is ever written to.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from genaccel.errors import InputError
from genaccel.generate import GenerationRequest, GenerationResult, complete_request, model_defaults, model_settings
from genaccel.pipelines.families import family_of

from genaccel.ui.jobs import Cancelled, Job, JobRunner, PipelineCache

FIELD_LIMITS = {  # what the page accepts (a 2-core CPU and a big GPU alike); families add their own rules
    "width": (8, 4096),
    "height": (8, 4096),
    "frames": (1, 1024),
    "steps": (1, 1000),
    "guidance": (0.0, 50.0),
    "seed": (0, 2**32 - 1),
}


@dataclass
class RunSettings:
    """One request from the page. None for size/frames/steps/guidance means the model's default."""

    prompt: str
    model: str
    spec: str = "none"
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0

    def checked(self) -> "RunSettings":
        """Range checks that need no model; raises InputError with a readable message."""
        if not (self.prompt or "").strip():
            raise InputError("Please enter a prompt.")
        if not (self.model or "").strip():
            raise InputError("Please choose a model.")
        for name, (low, high) in FIELD_LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, float) and name != "guidance":
                if not value.is_integer():
                    raise InputError(f"{name} must be a whole number; got {value}")
                setattr(self, name, int(value))
                value = int(value)
            if not low <= value <= high:
                raise InputError(f"{name} must be between {low} and {high}; got {value}")
        return self

    def request(self) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt.strip(), negative_prompt=self.negative_prompt or "", num_frames=self.frames,
            height=self.height, width=self.width, num_inference_steps=self.steps, guidance_scale=self.guidance,
            seed=int(self.seed),
        )


def figures(result: GenerationResult) -> dict[str, Any]:
    """The run's figures as the page shows them."""
    s = result.summary()
    keep = ("accel", "seconds", "denoise_seconds", "decode_seconds", "transformer_calls", "skipped_calls",
            "attention_calls", "attention_reused", "frames", "height", "width", "steps", "seed", "accelerator_stats")
    return {k: s[k] for k in keep}


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

    # ------------------------------------------------------------------ models
    def pipeline(self, model: str):
        return self.pipelines.get(model.strip(), self.device)

    def model_info(self, model: str) -> dict[str, Any]:
        """Family, defaults of each setting, and which accelerators the model's family supports."""
        from genaccel.acceleration import pipeline_model_key
        from genaccel.ui.controls import support_notes

        pipe = self.pipeline(model)
        family = family_of(pipe)
        return {
            "model": model,
            "family": family.name,
            "title": family.title,
            "key": pipeline_model_key(pipe),
            "settings": {name: model_defaults(pipe, name) for name in model_settings(pipe)},
            "frames_rule": family.frames_rule(pipe),
            "unsupported": {k: v for k, v in support_notes(family).items() if v},
        }

    def _job_dir(self, kind: str) -> Path:
        path = self.output_dir / f"{kind}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    # ------------------------------------------------------------------ generation
    def _generate(self, job: Job, pipe, request: GenerationRequest, spec: str, label: str = "") -> GenerationResult:
        from genaccel.acceleration import apply
        from genaccel.generate import generate

        apply(pipe, spec)

        def on_step(step: int, total: int | None) -> None:
            job.check()
            job.emit("progress", (step, total, label))

        return generate(pipe, request, callback=on_step)

    def _prepare(self, settings: RunSettings):
        from genaccel.acceleration import pipeline_model_key
        from genaccel.spec import parse_spec, resolve

        settings.checked()
        pipe = self.pipeline(settings.model)
        family = family_of(pipe)
        resolve(parse_spec(settings.spec or "none", family, pipeline_model_key(pipe)), family)
        request = complete_request(pipe, settings.request())
        return pipe, request

    def generate(self, session: str, settings: RunSettings) -> Iterator[tuple[str, Any]]:
        """Events ("progress", (step, total, label)) then ("done", {"video", "figures"})."""
        from genaccel.video_io import write_video

        pipe, request = self._prepare(settings)

        def work(job: Job):
            result = self._generate(job, pipe, request, settings.spec or "none")
            video = write_video(result.frames, self._job_dir("generate") / "video.mp4")
            return {"video": str(video), "figures": figures(result)}

        yield from self.jobs.run(session, self.device, work)

    def compare(self, session: str, settings: RunSettings) -> Iterator[tuple[str, Any]]:
        """Baseline and accelerated runs with the same seed; ("done", {videos, rows}) at the end."""
        from genaccel.bench.quality import psnr, ssim
        from genaccel.bench.report import compare_frames
        from genaccel.video_io import to_uint8, write_video

        pipe, request = self._prepare(settings)

        def work(job: Job):
            base = self._generate(job, pipe, request, "none", label="baseline")
            fast = self._generate(job, pipe, request, settings.spec or "none", label="accelerated")
            folder = self._job_dir("compare")
            diff = np.clip(np.abs(fast.frames - base.frames) * 4.0, 0, 1)
            paths = {
                "baseline": write_video(base.frames, folder / "baseline.mp4"),
                "accelerated": write_video(fast.frames, folder / "accelerated.mp4"),
                "difference": write_video(diff, folder / "difference.mp4"),
            }
            side = compare_frames(request.prompt, [("baseline", base.frames), (fast.accel, fast.frames)])
            paths["side_by_side"] = write_video(side.astype(np.float32) / 255.0, folder / "compare.mp4")
            rows = []
            for name, result in (("baseline", base), ("accelerated", fast)):
                row = {"run": name, "accel": result.accel, "seconds": round(result.seconds, 3),
                       "speedup": round(base.seconds / result.seconds, 3) if result.seconds else None,
                       "skipped_passes": f"{result.stats.get('skipped_calls', 0)}/{result.stats.get('transformer_calls', 0)}"}
                if name == "baseline":
                    row.update(psnr_db=None, ssim=None)
                else:
                    value = psnr(to_uint8(base.frames), to_uint8(result.frames))
                    row.update(psnr_db="identical" if value == float("inf") else round(value, 2),
                               ssim=round(ssim(base.frames, result.frames), 4))
                row["adherence"] = _adherence(result.frames, request.prompt)
                rows.append(row)
            return {**{k: str(v) for k, v in paths.items()}, "rows": rows}

        yield from self.jobs.run(session, self.device, work)

    def batch(self, session: str, items, settings: RunSettings) -> Iterator[tuple[str, Any]]:
        """Events ("item", {"video", "prompt", "index"}) as videos finish, then ("done", {"zip", "manifest", ...})."""
        from genaccel.batch import MANIFEST, run_batch, validate_items

        settings.prompt = settings.prompt or items[0].prompt  # RunSettings wants one; items carry their own
        pipe, _ = self._prepare(settings)

        def make_request(item):
            options = item.options
            return GenerationRequest(
                prompt=item.prompt, negative_prompt=str(options.get("negative", settings.negative_prompt or "")),
                num_frames=options.get("frames", settings.frames), height=options.get("height", settings.height),
                width=options.get("width", settings.width), num_inference_steps=options.get("steps", settings.steps),
                guidance_scale=options.get("guidance", settings.guidance), seed=int(options.get("seed", settings.seed)),
                setting=str(options.get("setting", "default")),
            )

        validate_items(pipe, items, make_request, settings.spec or "none")  # errors before the job is queued

        def work(job: Job):
            folder = self._job_dir("batch")

            def on_step(step, total):
                job.check()  # cancellation takes effect between denoising steps
                job.emit("progress", (step, total, "batch"))

            def on_item(entry, path):
                job.emit("item", {"video": str(path), "prompt": entry["prompt"], "index": entry["index"]})

            summary = run_batch(pipe, items, folder, make_request=make_request, accel=settings.spec or "none",
                                progress=False, on_item=on_item, step_callback=on_step)
            archive = folder / "videos.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for line in (folder / MANIFEST).read_text().splitlines():
                    zf.write(folder / json.loads(line)["out"], json.loads(line)["out"])
                zf.write(folder / MANIFEST, MANIFEST)
            return {**summary, "zip": str(archive)}

        yield from self.jobs.run(session, self.device, work)

    def cancel(self, session: str) -> bool:
        return self.jobs.cancel(session)


def _adherence(frames: np.ndarray, prompt: str) -> str | None:
    """'correct' or what the scorer read instead, for prompts of the embedded model's grammar."""
    from genaccel.score import score_frames
    from genaccel.shapes import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError:
        return None
    verdict = score_frames(frames, prompt)
    if verdict.correct:
        return "correct"
    return f"read {verdict.color or '?'} {verdict.shape or '?'} {verdict.motion or '?'}"


__all__ = ["Cancelled", "RunSettings", "Studio", "figures"]
