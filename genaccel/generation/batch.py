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
import logging
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genaccel.errors import InputError
from genaccel.generation.request import MEMORY_ONLY, GenerationRequest, request_from_options
from genaccel.io import failpoints
from genaccel.io.files import append_line, write_atomic

log = logging.getLogger("genaccel")

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


# At most this many errors of a batch file are listed (the rest are counted): enough to fix a file in one go.
MAX_REPORTED = 20


def read_items(path: Path, base: GenerationRequest | None = None) -> list[BatchItem]:
    """Parse a prompts file; raise InputError listing everything malformed in it, by line."""
    return parse_items(read_prompts_text(path), path.suffix.lower(), source=str(path), base=base)


def read_prompts_text(path: Path) -> str:
    """A prompts file's text; InputError in one line for a file that cannot be read, is binary or is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise InputError(f"{path}: a binary file, not a prompts file (it holds NUL bytes)")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of line 1
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


class _Errors:
    """Errors of a whole file, collected so that one run lists them all."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        self.lines.append(message)

    def raise_any(self, error=InputError) -> None:
        if not self.lines:
            return
        shown = self.lines[:MAX_REPORTED]
        if len(self.lines) > MAX_REPORTED:
            shown.append(f"... and {len(self.lines) - MAX_REPORTED} more errors")
        raise error("\n".join(shown))


def _line_options(line: str, kind: str, where: str) -> dict:
    """One line's options: the prompt of a .txt line, the object of a .jsonl line (names checked)."""
    if kind == ".txt":
        return {"prompt": line.strip()}
    try:
        options = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError):  # a number of thousands of digits, nesting thousands deep
        raise InputError(f"{where}not valid JSON (a number too long or nesting too deep)") from None
    if not isinstance(options, dict):
        raise InputError(
            f'{where}each line must be a JSON object such as {{"prompt": "..."}}; got {type(options).__name__}'
        )
    if "prompt" not in options:
        raise InputError(f'{where}the line has no "prompt"')
    name = options.get("name")
    if name is not None and (isinstance(name, bool) or not isinstance(name, (str, int))):
        raise InputError(f"{where}name must be text or a whole number; got {type(name).__name__}")
    return options


def parse_items(
    text: str, kind: str = ".txt", source: str = "prompts", base: GenerationRequest | None = None
) -> list[BatchItem]:
    """Parse prompts text: `.txt` (one prompt per line) or `.jsonl` (objects with "prompt", an optional
    "name" and request options by their names or aliases, with JSON types: 12, not "12"). Each item's
    options override `base`. The whole text is checked: the InputError lists every bad line."""
    from genaccel.errors import GenAccelError

    if kind not in (".txt", ".jsonl"):
        raise InputError(f"{source}: batch files must be .txt (one prompt per line) or .jsonl")
    items: list[BatchItem] = []
    lines: dict[str, int] = {}
    errors = _Errors()
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}:{number}: "
        try:
            options = _line_options(line, kind, where)
            request = request_from_options(options, base, source=where, ignore=("name",), typed=kind == ".jsonl")
        except GenAccelError as exc:
            errors.add(str(exc))
            continue
        name = _item_name(len(items), request.prompt, options.get("name"))
        if name in lines:
            errors.add(f"{where}the name '{name}' is already used by line {lines[name]}")
            continue
        lines[name] = number
        items.append(BatchItem(len(items), name, request, where))
    errors.raise_any()
    if not items:
        raise InputError(f"{source}: no prompts found")
    return items


def _read_entries(path: Path) -> tuple[list[dict], bool]:
    """The entries of a manifest (or part), and whether the file is clean: every line a complete entry.
    A process killed while appending leaves a torn last line; it is skipped (its item is redone)."""
    if not path.is_file():
        return [], True
    text = path.read_bytes().decode("utf-8", errors="replace")
    entries, clean = [], text.endswith("\n") or not text
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            clean = False
            continue
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("out"), str):
            entries.append(entry)
        else:
            clean = False
    return entries, clean


def _part_paths(out_dir: Path) -> list[Path]:
    """The manifest parts that processes of a launched batch left in `out_dir`."""
    return sorted(out_dir.glob(MANIFEST_PART.format(rank="*")))


def _load_manifest(out_dir: Path) -> dict[str, dict]:
    """Finished items by name, the latest line of each: the manifest, then the parts of an unfinished
    launched batch (newer)."""
    done = {}
    for path in (out_dir / MANIFEST, *_part_paths(out_dir)):
        done.update((entry["name"], entry) for entry in _read_entries(path)[0])
    return done


def _settle_manifest(out_dir: Path) -> list[dict]:
    """Make the manifest one complete line per item, in batch order: fold in the processes' parts,
    drop torn and superseded lines (written to a temporary file, then renamed into place), remove the
    parts; returns its entries."""
    manifest = out_dir / MANIFEST
    parts = _part_paths(out_dir)
    lines, clean = _read_entries(manifest)
    done = _load_manifest(out_dir)
    entries = sorted(done.values(), key=lambda e: (e.get("index", 0), e["name"]))
    if parts or not clean or len(lines) != len(entries):
        write_atomic(manifest, "".join(json.dumps(e) + "\n" for e in entries))
        for part in parts:
            part.unlink()
    return entries


def _staged(target: Path, token: str) -> Path:
    """Where an item's video is written before it is listed: hidden, named by the run's token (which its
    manifest line records), so a resumed batch knows whether a staged video is the one listed."""
    stem = target.name[: -len(target.suffix)] if target.suffix else target.name
    return target.with_name(f".{stem}-partial-{token}{target.suffix}")


def _promote(staged: Path, target: Path, earlier: Path | None) -> None:
    """Put a listed video under its final name, in place of the item's earlier video (genaccel's: listed
    in the manifest, or a frame folder genaccel wrote)."""
    if earlier is not None and earlier != target:
        _remove_superseded(earlier)
    if target.is_dir():
        _remove_superseded(target)  # a folder cannot be replaced in one rename
    os.replace(staged, target)


# A staged video (.NAME-partial-TOKEN...) or its writer's temporary (..NAME-partial-TOKEN...).
_STAGED = re.compile(r"\.\.?(?P<name>.+)-partial-[0-9a-f]{12}.*")


def _finish_listed(out_dir: Path, items: list[BatchItem], suffix: str, done: dict[str, dict]) -> None:
    """What a killed batch left between writing and renaming: a staged video its manifest line lists is
    put in place; any other staged video, or a writer's temporary of one, is removed."""
    names = {item.name for item in items}
    for leftover in sorted(out_dir.iterdir()):  # one listing, however many items
        match = _STAGED.fullmatch(leftover.name)
        if match is None or match["name"] not in names:
            continue
        entry, target = done.get(match["name"]), out_dir / f"{match['name']}{suffix}"
        if (
            entry is not None
            and entry.get("token")
            and entry["out"] == target.name
            and leftover == _staged(target, entry["token"])
        ):
            _promote(leftover, target, None)
        else:
            _remove_superseded(leftover)


def _as_run(item: BatchItem) -> GenerationRequest:
    # Unset memory options mean the defaults here, not "as the previous item left the pipeline": an item's
    # video must not depend on its neighbours (VAE tiling changes pixels).
    return dataclasses.replace(
        item.request, offload=item.request.offload or "none", vae_tiling=bool(item.request.vae_tiling)
    )


def check_items_before_loading(model: str, items: list[BatchItem]) -> list | None:
    """What the model's files tell of every item (frame rules, sizes, settings, accelerator support),
    before the model loads; the InputError lists every item that fails, by line. Returns each item's
    `CompletedRequest` (the model's facts read once for the whole batch; `prepare_items` takes them as they
    are), or None where only the loaded model tells them."""
    from genaccel.errors import GenAccelError
    from genaccel.generation.prepare import complete
    from genaccel.models.facts import model_facts

    facts = model_facts(model)
    if facts is None:
        return None
    completed, errors = [], _Errors()
    for item in items:
        try:
            completed.append(complete(facts, _as_run(item)))
        except GenAccelError as exc:
            errors.add(f"{item.where}{exc}")
    errors.raise_any()
    return completed


def prepare_items(pipe, items: list[BatchItem], completed: list | None = None) -> list:
    """Every item prepared for this model (spec, settings, frame rules) before anything runs; an
    error names the item's line. `completed`: the items' requests as `check_items_before_loading` completed
    them (not completed again); without them the model's facts are read once, from the pipeline."""
    from genaccel.errors import GenAccelError
    from genaccel.generation.prepare import prepare
    from genaccel.models.facts import ModelFacts

    facts = None if completed is not None else ModelFacts.of(pipe)  # read once for the whole batch
    requests = completed if completed is not None else [_as_run(item) for item in items]
    prepared, errors = [], _Errors()
    for item, request in zip(items, requests):
        try:
            ready = prepare(pipe, request, facts)
        except GenAccelError as exc:
            errors.add(f"{item.where}{exc}")
            continue
        for notice in ready.notices:
            log.warning("%s%s", item.where, notice)
        prepared.append(ready)
    errors.raise_any()
    return prepared


def _ran_as_asked(entry: dict, prepared) -> bool:
    """Whether a manifest entry is the run this item asks for (same request, same spec)."""
    asked = {
        k: v
        for k, v in prepared.request.to_dict().items()  # sizes: as made; memory: the same video
        if v is not None and k not in ("accel", "num_frames", "height", "width", *MEMORY_ONLY)
    }
    if prepared.spec is not None:
        asked["accel"] = prepared.spec.text
    # Manifests written before VAE tiling was an option have no "vae_tiling": those videos were untiled.
    return all(bool(entry.get(k)) == v if k == "vae_tiling" else entry.get(k) == v for k, v in asked.items())


def _targets(out_dir: Path, items: list[BatchItem], suffix: str, ours: set[str]) -> list[Path]:
    """Each item's output path, checked: inside `out_dir`, and nothing in the way that genaccel did
    not write (`ours`: the outputs the manifest lists)."""
    from genaccel.io.video import check_output_path

    root = out_dir.resolve()
    targets = []
    for item in items:
        target = out_dir / f"{item.name}{suffix}"
        if target.resolve().parent != root:  # names are sanitised; this holds the invariant here too
            raise InputError(f"{item.where}the name '{item.name}' does not stay inside {out_dir}")
        if suffix and target.exists() and target.name not in ours:
            raise InputError(
                f"{item.where}{target} exists and genaccel did not write it (it is not in the manifest): "
                "move it or give the item another name"
            )
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

    from genaccel.io.video import holds_only_frames

    if path.is_file() and not path.is_symlink():
        path.unlink()
    elif holds_only_frames(path):  # a frame folder genaccel wrote, or its unfinished temporary
        shutil.rmtree(path)


def run_batch(
    pipe,
    items: list[BatchItem],
    out_dir: Path,
    *,
    fmt: str = "mp4",
    fps: int = 8,
    progress: bool = True,
    on_item=None,
    step_callback=None,
    prepared: list | None = None,
    processes=None,
    completed: list | None = None,
) -> dict:
    """Generate every item not already finished; return counts and the manifest path.

    Every item is prepared and every target checked before the first video is made (pass
    `prepared` from `prepare_items` if that was done already, or `completed` from `check_items_before_loading`).
    `on_item(entry, path)` is called after each video is written (entry = manifest line); `step_callback(step, total)` after each
    denoising step (it may raise to stop the batch). `processes` is accelerate's `PartialState` when
    this is one of several processes (`genaccel.engine.distributed.process_state`): this one makes its share.
    """
    from tqdm import tqdm

    from genaccel.generation.generate import generate
    from genaccel.io.video import check_output_path, write_video

    out_dir = Path(out_dir).expanduser()
    suffix = "" if fmt == "png" else f".{fmt}"
    launched = processes is not None and processes.num_processes > 1
    if (processes is None or processes.is_main_process) and out_dir.is_dir():
        # What an earlier, killed run left: its parts folded in, its listed videos renamed, the rest removed.
        _finish_listed(out_dir, items, suffix, {e["name"]: e for e in _settle_manifest(out_dir)})
    if launched:
        processes.wait_for_everyone()
    with _together(processes):  # every process checks everything, and stops if any one cannot go on
        check_output_path(out_dir / "probe.mp4")  # the folder: writable, not a file
        prepared = prepared if prepared is not None else prepare_items(pipe, items, completed)
        done = _load_manifest(out_dir)
        # An item is finished when the manifest has it, as asked now (request, spec, format), and its video exists.
        finished = {
            item.name
            for item, ready in zip(items, prepared)
            if item.name in done
            and done[item.name]["out"] == f"{item.name}{suffix}"
            and (out_dir / done[item.name]["out"]).exists()
            and _ran_as_asked(done[item.name], ready)
        }
        todo = [(item, ready) for item, ready in zip(items, prepared) if item.name not in finished]
        targets = _targets(out_dir, [item for item, _ in todo], suffix, {e["out"] for e in done.values()})
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {item.name for item in items}
    work = list(zip(todo, targets))
    if launched:
        processes.wait_for_everyone()  # every process has read the manifest before any writes to it
        with processes.split_between_processes(work) as share:
            work = list(share)
        manifest = out_dir / MANIFEST_PART.format(rank=processes.process_index)  # this process's videos only
        label = f"batch [{processes.process_index + 1}/{processes.num_processes}]"
    else:
        manifest = out_dir / MANIFEST
        label = "batch"
    with tqdm(total=len(work), desc=label, unit="video", disable=not progress) as bar:
        for (item, ready), target in work:
            result = generate(pipe, ready, callback=step_callback)
            failpoints.reached("batch:generated")
            token = uuid.uuid4().hex[:12]
            staged = _staged(target, token)
            write_video(result.frames, staged, fps=fps, checked=True)
            failpoints.reached("batch:staged")
            entry = {"name": item.name, "out": target.name, "index": item.index, "token": token, **result.summary()}
            append_line(manifest, json.dumps(entry))  # only appended to while a batch runs
            failpoints.reached("batch:listed")
            earlier = out_dir / done[item.name]["out"] if item.name in done else None
            _promote(staged, target, earlier)
            failpoints.reached("batch:renamed")
            bar.update(1)
            if on_item is not None:
                on_item(entry, target)
    if launched:
        processes.wait_for_everyone()
    written = len(work)
    if processes is None or processes.is_main_process:
        merged = _settle_manifest(out_dir)
        # Staged videos of a killed process that outlived it (its encoder finishing them).
        _finish_listed(out_dir, items, suffix, {e["name"]: e for e in merged})
        written = sum(1 for e in merged if e["name"] in names) - len(finished)
    return {
        "out": str(out_dir),
        "manifest": str(out_dir / MANIFEST),
        "done": written,
        "skipped": len(finished),
        "total": len(items),
    }
