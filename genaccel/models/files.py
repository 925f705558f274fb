"""Checking a local model folder's files before any of them is loaded.

diffusers reports a truncated weight file or a broken config deep inside its loaders, often as a
traceback that does not say which file; `check_model_folder` reads every config and every
safetensors header first (the headers only: no weights are read) and names the first bad file in one
line. Weights load only from safetensors: a folder that has pickle weights only (.bin, .pt, .ckpt) is
refused, since unpickling runs code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import tomllib

from genaccel.errors import ModelError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_json(path: Path, root: Path) -> object:
    """A JSON file's content, or ModelError naming the file (relative to `root`)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{root.name}/{path.relative_to(root)}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{root.name}/{path.relative_to(root)}: not valid JSON ({_first_line(exc)})") from None


def read_toml(path: Path) -> dict:
    """A model folder's genaccel.toml, or ModelError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: not valid TOML ({_first_line(exc)})") from None


def check_safetensors(path: Path, root: Path) -> None:
    """The file's header parses and its tensors lie inside the file (a truncated file fails here)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        reason = _first_line(exc).removeprefix("Error while deserializing header: ")
        raise ModelError(f"{root.name}/{path.relative_to(root)}: corrupt or truncated weights ({reason})") from None


def check_component(folder: Path, root: Path) -> None:
    """One component folder of `root`: its JSON files, its safetensors headers, no pickle-only weights."""
    for path in sorted(folder.glob("*.json")):
        data = read_json(path, root)
        if path.name.endswith(".safetensors.index.json"):  # sharded weights: every shard it names
            shards = sorted(set((data or {}).get("weight_map", {}).values())) if isinstance(data, dict) else []
            for shard in shards:
                if not (folder / shard).is_file():
                    raise ModelError(f"{root.name}/{folder.name}/{shard}: missing (named by {path.name})")
    weights = sorted(folder.glob("*.safetensors"))
    for path in weights:
        check_safetensors(path, root)
    pickles = [p for p in sorted(folder.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if pickles and not weights:
        raise ModelError(
            f"{root.name}/{folder.name}/{pickles[0].name}: pickle weights; genaccel loads only "
            "safetensors (unpickling can run code from the file): convert them to .safetensors"
        )
    if (folder / "config.json").is_file() and not weights:  # a model (schedulers and tokenizers have no config.json)
        raise ModelError(f"{root.name}/{folder.name}: no weights (no .safetensors file next to its config.json)")


def check_model_folder(root: Path) -> None:
    """Check a diffusers pipeline folder (model_index.json and the components it names) before loading it;
    raise ModelError naming the first missing, corrupt or unsafe file."""
    index = read_json(root / "model_index.json", root)
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ModelError(f'{root.name}/model_index.json: not a diffusers pipeline index (no "_class_name")')
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue  # settings, and components the pipeline does without
        folder = root / name
        if not folder.is_dir():
            raise ModelError(f"{root.name}: the component '{name}' is missing (no {name}/ folder)")
        check_component(folder, root)
