"""Batch generation: one video per prompt of a .txt or .jsonl file, resumable, in one or many processes.

Each finished item appends a line to DIR/manifest.jsonl (the manifest is rewritten atomically);
a re-run skips items whose manifest entry and video exist. A video is written under a temporary name,
listed in the manifest, then renamed, so a video under its final name is always in the manifest.

Under `accelerate launch` the unfinished items are split between the processes
(`PartialState.split_between_processes`); each process lists its videos in its own part
(DIR/manifest.part-RANK.jsonl), and the main process folds the parts into the manifest when all are
done. A batch killed on the way is resumed by starting it again, with any number of processes: the
manifest and the parts left say what is finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genaccel.errors import InputError
from genaccel.request import MEMORY_ONLY, GenerationRequest, request_from_options

MANIFEST = "manifest.jsonl"  # item names have no dot, so no item can be named like this (or the UI's videos.zip)
# What each process of a launched batch writes instead; folded into the manifest when the batch ends.
MANIFEST_PART = "manifest.part-{rank}.jsonl"


@dataclass
class BatchItem:
    """One line of a prompts file: its position, its output name and the request it makes."""

    index: int
    name: str
    request: GenerationRequest
    where: str = ""  # "file:line: ", the prefix of errors about this item

    @property
    def prompt(self) -> str:
        return self.request.prompt


def safe_name(text: str) -> str:
    """A file name of word characters and dashes: no dot (the output suffix is the format), no separator."""
    return re.sub(r"[^\w-]+", "-", text).strip("-")[:96]


def _item_name(index: int, prompt: str, given) -> str:
    if given is not None:
        return safe_name(str(given)) or f"{index:04d}"
    return f"{index:04d}-{safe_name(prompt.lower())[:48].strip('-')}".rstrip("-")


def read_items(path: Path, base: GenerationRequest | None = None) -> list[BatchItem]:
    """Parse a prompts file; raise InputError on anything malformed, naming the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    return parse_items(text, path.suffix.lower(), source=str(path), base=base)


def parse_items(text: str, kind: str = ".txt", source: str = "prompts", base: GenerationRequest | None = None) -> list[BatchItem]:
    """Parse prompts text: `.txt` (one prompt per line) or `.jsonl` (objects with "prompt", an optional
    "name" and request options by their names or aliases). Each item's options override `base`."""
    if kind not in (".txt", ".jsonl"):
        raise InputError(f"{source}: batch files must be .txt (one prompt per line) or .jsonl")
    items: list[BatchItem] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}:{number}: "
        if kind == ".txt":
            options = {"prompt": line.strip()}
        else:
            try:
                options = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}not valid JSON ({exc.msg})") from None
            if not isinstance(options, dict) or not isinstance(options.get("prompt"), str):
                raise InputError(f"{where}each line needs a \"prompt\" text")
        request = request_from_options(options, base, source=where, ignore=("name",))
        name = _item_name(len(items), request.prompt, options.get("name"))
        if name in lines:
            raise InputError(f"{where}the name '{name}' is already used by line {lines[name]}")
        lines[name] = number
        items.append(BatchItem(len(items), name, request, where))
    if not items:
        raise InputError(f"{source}: no prompts found")
    return items


def _read_entries(path: Path) -> list[dict]:
    entries = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a finished item's line: the item is redone
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("out"), str):
                entries.append(entry)
    return entries


def _part_paths(out_dir: Path) -> list[Path]:
    """The manifest parts that processes of a launched batch left in `out_dir`."""
    return sorted(out_dir.glob(MANIFEST_PART.format(rank="*")))


def _load_manifest(out_dir: Path) -> dict[str, dict]:
    """Finished items by name: the manifest, then the parts of an unfinished launched batch (newer)."""
    done = {}
    for path in (out_dir / MANIFEST, *_part_paths(out_dir)):
        done.update((entry["name"], entry) for entry in _read_entries(path))
    return done


def _write_manifest(path: Path, entries: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    os.replace(tmp, path)


def _merge_parts(out_dir: Path) -> list[dict]:
    """Fold the processes' manifest parts into the manifest (one line per item, in batch order) and
    remove them; returns the manifest's entries."""
    parts = _part_paths(out_dir)
    entries = sorted(_load_manifest(out_dir).values(), key=lambda e: (e.get("index", 0), e["name"]))
    if parts:
        _write_manifest(out_dir / MANIFEST, entries)
        for part in parts:
            part.unlink()
    for unfinished in out_dir.glob(MANIFEST_PART.format(rank="*") + ".tmp"):  # a process killed while writing
        unfinished.unlink()
    return entries


def prepare_items(pipe, items: list[BatchItem]) -> list:
    """Every item prepared for this model (spec, settings, frame rules) before anything runs; an
    error names the item's line."""
    from genaccel.errors import GenAccelError
    from genaccel.prepare import prepare

    prepared = []
    for item in items:
        # Unset memory options mean the defaults here, not "as the previous item left the pipeline": an item's
        # video must not depend on its neighbours (VAE tiling changes pixels).
        request = dataclasses.replace(item.request, offload=item.request.offload or "none",
                                      vae_tiling=bool(item.request.vae_tiling))
        try:
            prepared.append(prepare(pipe, request))
        except GenAccelError as exc:
            raise type(exc)(f"{item.where}{exc}") from None
    return prepared


def _ran_as_asked(entry: dict, prepared) -> bool:
    """Whether a manifest entry is the run this item asks for (same request, same spec)."""
    asked = {k: v for k, v in prepared.request.to_dict().items()  # sizes: as made; memory: the same video
             if v is not None and k not in ("accel", "num_frames", "height", "width", *MEMORY_ONLY)}
    if prepared.spec is not None:
        asked["accel"] = prepared.spec.text
    # Manifests written before VAE tiling was an option have no "vae_tiling": those videos were untiled.
    return all(bool(entry.get(k)) == v if k == "vae_tiling" else entry.get(k) == v for k, v in asked.items())


def _targets(out_dir: Path, items: list[BatchItem], suffix: str, ours: set[str]) -> list[Path]:
    """Each item's output path, checked: inside `out_dir`, and nothing in the way that genaccel did
    not write (`ours`: the outputs the manifest lists)."""
    from genaccel.video_io import check_output_path

    root = out_dir.resolve()
    targets = []
    for item in items:
        target = out_dir / f"{item.name}{suffix}"
        if target.resolve().parent != root:  # names are sanitised; this holds the invariant here too
            raise InputError(f"{item.where}the name '{item.name}' does not stay inside {out_dir}")
        if suffix and target.exists() and target.name not in ours:
            raise InputError(f"{item.where}{target} exists and genaccel did not write it (it is not in the manifest): "
                             "move it or give the item another name")
        targets.append(check_output_path(target, probe=False))
    return targets


@contextmanager
def _together(processes):
    """Run the block on every process; if it fails on any, every process stops with that error (instead
    of the others waiting for it at the next barrier)."""
    from genaccel.errors import GenAccelError, InputError

    error = None
    try:
        yield
    except GenAccelError as exc:
        error = exc
    if processes is not None and processes.num_processes > 1:
        from accelerate.utils import gather_object

        reports = gather_object([str(error) if error else ""])
        first = next((report for report in reports if report), None)
        if first and error is None:
            raise InputError(f"another process stopped the batch: {first}")
    if error is not None:
        raise error


def _remove_superseded(path: Path) -> None:
    """Remove an item's earlier output (listed in the manifest, so genaccel's) once its redo is in
    place, so that the folder holds what the manifest says; a frame folder only if still genaccel's."""
    import shutil

    from genaccel.video_io import is_frame_folder

    if path.is_file() and not path.is_symlink():
        path.unlink()
    elif path.is_dir() and is_frame_folder(path):
        shutil.rmtree(path)


def run_batch(pipe, items: list[BatchItem], out_dir: Path, *, fmt: str = "mp4", fps: int = 8, progress: bool = True,
              on_item=None, step_callback=None, prepared: list | None = None, processes=None) -> dict:
    """Generate every item not already finished; return counts and the manifest path.

    Every item is prepared and every target checked before the first video is made (pass
    `prepared` from `prepare_items` if that was done already). `on_item(entry, path)` is called
    after each video is written (entry = manifest line); `step_callback(step, total)` after each
    denoising step (it may raise to stop the batch). `processes` is accelerate's `PartialState` when
    this is one of several processes (`genaccel.distributed.process_state`): this one makes its share.
    """
    from tqdm import tqdm

    from genaccel.generate import generate
    from genaccel.video_io import check_output_path, write_video

    out_dir = Path(out_dir).expanduser()
    suffix = "" if fmt == "png" else f".{fmt}"
    launched = processes is not None and processes.num_processes > 1
    if processes is None or processes.is_main_process:
        _merge_parts(out_dir)  # what an earlier, killed launch left: this run's parts start empty
    with _together(processes):  # every process checks everything, and stops if any one cannot go on
        check_output_path(out_dir / "probe.mp4")  # the folder: writable, not a file
        prepared = prepared if prepared is not None else prepare_items(pipe, items)
        done = _load_manifest(out_dir)
        # An item is finished when the manifest has it, as asked now (request, spec, format), and its video exists.
        finished = {item.name for item, ready in zip(items, prepared)
                    if item.name in done and done[item.name]["out"] == f"{item.name}{suffix}"
                    and (out_dir / done[item.name]["out"]).exists() and _ran_as_asked(done[item.name], ready)}
        todo = [(item, ready) for item, ready in zip(items, prepared) if item.name not in finished]
        targets = _targets(out_dir, [item for item, _ in todo], suffix, {e["out"] for e in done.values()})
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {item.name for item in items}
    work = list(zip(todo, targets))
    if launched:
        processes.wait_for_everyone()  # every process has read the manifest before any writes to it
        with processes.split_between_processes(work) as share:
            work = list(share)
        part = out_dir / MANIFEST_PART.format(rank=processes.process_index)
        entries: dict[str, dict] = {}  # a part lists this process's videos only
        label = f"batch [{processes.process_index + 1}/{processes.num_processes}]"
    else:
        part = out_dir / MANIFEST
        entries = dict(done)  # an item's entry is replaced when its redo is in place, never dropped before
        label = "batch"
    written = 0
    with tqdm(total=len(work), desc=label, unit="video", disable=not progress) as bar:
        for (item, ready), target in work:
            result = generate(pipe, ready, callback=step_callback)
            staged = target.with_name(f".{item.name}-partial{suffix}")  # genaccel's own: replaced freely
            for leftover in (staged, *out_dir.glob(f".{staged.stem}.*")):  # and write_video's temporaries of it
                _remove_superseded(leftover)  # (a process killed while writing leaves them)
            write_video(result.frames, staged, fps=fps, checked=True)
            entry = {"name": item.name, "out": target.name, "index": item.index, **result.summary()}
            entries[item.name] = entry
            _write_manifest(part, list(entries.values()))
            # The earlier video (listed in the manifest, or a frame folder genaccel wrote: checked by _targets)
            # makes way for the new one.
            for earlier in {out_dir / done[item.name]["out"], target} if item.name in done else {target}:
                _remove_superseded(earlier)
            os.replace(staged, target)
            written += 1
            bar.update(1)
            if on_item is not None:
                on_item(entry, target)
    if launched:
        processes.wait_for_everyone()
    if processes is None or processes.is_main_process:
        merged = _merge_parts(out_dir)
        for item in items:  # staged videos of a killed process that outlived it (its ffmpeg finishing them)
            staged = f".{item.name}-partial"
            for leftover in (*out_dir.glob(f"{staged}*"), *out_dir.glob(f".{staged}*")):
                _remove_superseded(leftover)
        written = sum(1 for e in merged if e["name"] in names) - len(finished)
    return {"out": str(out_dir), "manifest": str(out_dir / MANIFEST), "done": written, "skipped": len(finished),
            "total": len(items)}
