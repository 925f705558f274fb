"""Calibrated profiles: what `genaccel calibrate` and `genaccel tune` measured for a model, stored as TOML
(TeaCache coefficients, MagCache ratios, computed-step schedules, token redundancy, tuned presets).

Profiles written by `genaccel calibrate` go to the user's profile folder
($GENACCEL_PROFILE_DIR, default ~/.cache/genaccel/profiles); profiles shipped with the package
(pipelines/profiles/) are found too. Files are keyed by a model key derived from the model id.
`read_profile` is the one reader: a run reads its model's profiles once, into `genaccel.models.facts.ModelFacts`.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import tomllib

from genaccel.errors import ModelError


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


def _shipped_dir():
    return resources.files("genaccel.pipelines").joinpath("profiles")


def read_profile(path: Path) -> dict:
    """The content of one profile file: the only reader of profiles. A file that cannot be read or parsed is a
    ModelError naming it, in one line (the CLI exits 2); one shipped with genaccel is a bug and says so."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        problem = f"cannot read it ({exc.strerror or exc})"
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problem = f"not a valid profile ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    shipped = Path(str(_shipped_dir())) in Path(path).resolve().parents
    advice = "a file shipped with genaccel: please report this bug" if shipped else "fix or delete the file"
    raise ModelError(f"{path}: {problem}; {advice}")


def profile_paths(key: str) -> list[Path]:
    """The profile files of a model key that exist: the user's, then the one shipped with the package."""
    candidates = (profile_dir() / f"{key}.toml", Path(str(_shipped_dir().joinpath(f"{key}.toml"))))
    return [path for path in candidates if path.is_file()]


def read_profiles(key: str) -> tuple[dict, ...]:
    """Every profile of a model key, each file read once: the user's first, then the shipped one."""
    return tuple(read_profile(path) for path in profile_paths(key))


def load_profile(key: str) -> dict:
    """The profile of a model key: the user's calibrated one first, then a shipped one; {} if none."""
    paths = profile_paths(key)
    return read_profile(paths[0]) if paths else {}


def profile_keys() -> list[str]:
    """The model keys of every profile on this machine: the user's folder, then the shipped ones."""
    keys = []
    for folder in (profile_dir(), _shipped_dir()):
        if folder.is_dir():
            keys += sorted(
                p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file()
            )
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
    from genaccel.io.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, dump_profile(profile))
