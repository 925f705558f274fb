"""Calibrated profiles: per-model TeaCache coefficients and MagCache ratios, stored as TOML.

Profiles written by `genaccel calibrate` go to the user's profile folder
($GENACCEL_PROFILE_DIR, default ~/.cache/genaccel/profiles); profiles shipped with the package
(pipelines/profiles/) are found too. Files are keyed by a model key derived from the model id.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path


def profile_dir() -> Path:
    return Path(os.environ.get("GENACCEL_PROFILE_DIR", Path.home() / ".cache" / "genaccel" / "profiles"))


def model_key(model_id: str) -> str:
    """A file-name-safe key for a model id or path."""
    name = model_id.rstrip("/\\")
    if os.sep in name or "/" in name:
        name = name.replace("\\", "/")
        name = "-".join(name.split("/")[-2:]) if not Path(model_id).exists() else Path(name).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "model"


def pipeline_model_key(pipe) -> str:
    """The profile/preset key of a loaded pipeline (set by genaccel's loader, else its name_or_path)."""
    key = getattr(pipe, "_genaccel_model_key", None)
    if key:
        return key
    return model_key(getattr(pipe.config, "_name_or_path", "") or type(pipe).__name__)


def load_profile(key: str) -> dict:
    """The profile of a model key: the user's calibrated one first, then a shipped one; {} if none."""
    user = profile_dir() / f"{key}.toml"
    if user.is_file():
        return tomllib.loads(user.read_text())
    shipped = resources.files("genaccel.pipelines").joinpath("profiles", f"{key}.toml")
    if shipped.is_file():
        return tomllib.loads(shipped.read_text())
    return {}


def profile_sources(key: str) -> list[dict]:
    """Every profile of a model key, the user's first, then the shipped one (unreadable ones skipped)."""
    found = []
    for path in (profile_dir() / f"{key}.toml", resources.files("genaccel.pipelines").joinpath("profiles", f"{key}.toml")):
        if path.is_file():
            try:
                found.append(tomllib.loads(path.read_text()))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
                continue
    return found


def profile_keys() -> list[str]:
    """The model keys of every profile on this machine: the user's folder, then the shipped ones."""
    keys = []
    for folder in (profile_dir(), resources.files("genaccel.pipelines").joinpath("profiles")):
        if folder.is_dir():
            keys += sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file())
    return list(dict.fromkeys(keys))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_profile(profile: dict) -> str:
    """Serialise a profile (top-level scalars, then one table per section, nested tables as
    `[section.name]`) as TOML."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(_table_lines(profile, ""))).lstrip("\n") + "\n"


def _table_lines(table: dict, name: str) -> list[str]:
    lines = [f"[{name}]"] if name and any(not isinstance(v, dict) for v in table.values()) else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += [""] + _table_lines(value, f"{name}.{key}" if name else key)
    return lines


def save_profile(profile: dict, path: Path) -> Path:
    """Write a profile atomically."""
    from genaccel.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, dump_profile(profile))
