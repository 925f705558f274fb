"""Batch generation: one video per prompt of a .txt or .jsonl file, resumable.

Each finished item appends a line to DIR/manifest.jsonl (the manifest is rewritten atomically);
a re-run skips items whose manifest entry and video exist. Videos are written atomically too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from genaccel.errors import InputError

ITEM_OPTIONS = {"negative", "seed", "steps", "frames", "height", "width", "guidance", "accel", "name", "setting"}
MANIFEST = "manifest.jsonl"


@dataclass
class BatchItem:
    index: int
    prompt: str
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        if "name" in self.options:
            return re.sub(r"[^\w.-]+", "-", str(self.options["name"])).strip("-") or f"{self.index:04d}"
        slug = re.sub(r"[^a-z0-9]+", "-", self.prompt.lower()).strip("-")[:48]
        return f"{self.index:04d}-{slug}"


def read_items(path: Path) -> list[BatchItem]:
    """Parse a prompts file; raise InputError on anything malformed, naming the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_items(text, path.suffix.lower(), source=str(path))


def parse_items(text: str, kind: str = ".txt", source: str = "prompts") -> list[BatchItem]:
    """Parse prompts text: `.txt` (one prompt per line) or `.jsonl` (objects with "prompt" and options)."""
    if kind not in (".txt", ".jsonl"):
        raise InputError(f"{source}: batch files must be .txt (one prompt per line) or .jsonl")
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if kind == ".txt":
            items.append(BatchItem(len(items), line.strip()))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not str(obj.get("prompt", "")).strip():
            raise InputError(f"{source}:{number}: each line needs a non-empty \"prompt\"")
        unknown = set(obj) - ITEM_OPTIONS - {"prompt"}
        if unknown:
            raise InputError(f"{source}:{number}: unknown option(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(ITEM_OPTIONS))})")
        items.append(BatchItem(len(items), str(obj["prompt"]).strip(), {k: v for k, v in obj.items() if k != "prompt"}))
    if not items:
        raise InputError(f"{source}: no prompts found")
    return items


def _load_manifest(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from an older writer: the item will be redone
            done[entry.get("name")] = entry
    return done


def _write_manifest(path: Path, entries: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    os.replace(tmp, path)


def validate_items(pipe, items: list[BatchItem], make_request, accel: str = "none") -> list:
    """Check every item (its request, and its accelerator spec for this model) before anything runs.

    Returns the completed requests; raises InputError or SpecError naming the problem.
    """
    from genaccel.acceleration import pipeline_model_key
    from genaccel.generate import complete_request
    from genaccel.pipelines.families import family_of
    from genaccel.spec import parse_spec, resolve

    family, key = family_of(pipe), pipeline_model_key(pipe)
    for spec in {accel, *(str(i.options["accel"]) for i in items if "accel" in i.options)}:
        resolve(parse_spec(spec, family, key), family)
    return [complete_request(pipe, make_request(item)) for item in items]


def run_batch(pipe, items: list[BatchItem], out_dir: Path, *, make_request, accel: str = "none", fmt: str = "mp4",
              fps: int = 8, progress: bool = True, on_item=None, step_callback=None) -> dict:
    """Generate every item not already finished; return counts and the manifest path.

    `make_request(item)` builds each item's GenerationRequest; an item's own "accel" option beats
    `accel`. `on_item(entry, path)` is called after each video is written (entry = manifest line);
    `step_callback(step, total)` after each denoising step (it may raise to stop the batch).
    """
    from tqdm import tqdm

    from genaccel.acceleration import apply
    from genaccel.generate import generate
    from genaccel.video_io import check_output_path, write_video

    out_dir = Path(out_dir)
    check_output_path(out_dir / "probe.mp4")
    suffix = "" if fmt == "png" else f".{fmt}"
    requests = validate_items(pipe, items, make_request, accel)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    done = _load_manifest(manifest_path)
    entries = [e for e in done.values() if (out_dir / e.get("out", "")).exists()]
    finished = {e["name"] for e in entries}
    applied = None
    written = skipped = 0
    with tqdm(total=len(items), desc="batch", unit="video", disable=not progress) as bar:
        for item, request in zip(items, requests):
            if item.name in finished:
                skipped += 1
                bar.update(1)
                continue
            item_accel = str(item.options.get("accel", accel))
            if item_accel != applied:
                apply(pipe, item_accel)
                applied = item_accel
            result = generate(pipe, request, callback=step_callback)
            target = out_dir / f"{item.name}{suffix}"
            write_video(result.frames, target, fps=fps)
            entry = {"name": item.name, "out": target.name, "index": item.index, **result.summary()}
            entries.append(entry)
            _write_manifest(manifest_path, entries)
            written += 1
            bar.update(1)
            if on_item is not None:
                on_item(entry, target)
    return {"out": str(out_dir), "manifest": str(manifest_path), "done": written, "skipped": skipped, "total": len(items)}
