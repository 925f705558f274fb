"""Presets `quality`, `balanced`, `fast`: spec strings kept as data files under pipelines/presets/.

A model may have its own presets file (pipelines/presets/<model>.toml, e.g. the embedded model);
otherwise its family's file applies.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

from genaccel.errors import SpecError


@lru_cache(maxsize=None)
def load_presets(name: str) -> dict[str, dict]:
    """The presets table of a family or model; empty if there is no such file."""
    path = resources.files("genaccel.pipelines").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        return {}
    return tomllib.loads(path.read_text())


def preset_spec(family: str, preset: str, model_key: str | None = None) -> str:
    """The spec string of `preset` for a model (its own presets first) or else its family."""
    for source in (model_key, family):
        if source and preset in load_presets(source):
            return load_presets(source)[preset]["spec"]
    raise SpecError(f"no preset '{preset}' for {model_key or family}")
