"""Presets `quality`, `balanced`, `fast`, and presets a user tuned (`genaccel tune --save-as NAME`).

Where a preset is looked up, first match wins:
1. the model's profiles (the user's, then the one shipped with the package): `[presets.SETTING.NAME]`
   tables written by `genaccel tune`, for the run's setting, then for the default setting;
2. pipelines/presets/<model>.toml, then pipelines/presets/<family>.toml: spec strings kept as data.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

from genaccel.errors import SpecError

BUILT_IN = ("quality", "balanced", "fast")


@lru_cache(maxsize=None)
def load_presets(name: str) -> dict[str, dict]:
    """The presets table of a family or model; empty if there is no such file."""
    path = resources.files("genaccel.pipelines").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        return {}
    return tomllib.loads(path.read_text())


def tuned_presets(model_key: str | None, setting: str | None = None) -> dict[str, dict]:
    """Preset name -> its table (spec and the figures it was tuned to) from the model's profiles, for
    `setting` (falling back to the default setting's); the user's profile wins over the shipped one."""
    from genaccel.profiles import profile_sources

    found: dict[str, dict] = {}
    if not model_key:
        return found
    for profile in profile_sources(model_key):
        tables = profile.get("presets", {})
        for name in dict.fromkeys([setting or "default", "default"]):
            for preset, table in tables.get(name, {}).items():
                if isinstance(table, dict) and "spec" in table:
                    found.setdefault(preset.lower(), table)
    return found


def preset_names(model_key: str | None = None, setting: str | None = None) -> list[str]:
    """The presets a model offers: the built-in names, then the ones tuned for it."""
    return list(dict.fromkeys([*BUILT_IN, *tuned_presets(model_key, setting)]))


def any_tuned_name(name: str) -> bool:
    """True if some profile on this machine has a tuned preset called `name` (checks without a model)."""
    name = name.lower()
    return any(name in {k.lower() for k in names} for settings in tuned_by_model().values()
               for names in settings.values())


def tuned_by_model() -> dict[str, dict[str, dict[str, str]]]:
    """{model key: {setting: {preset: spec}}} for every profile on this machine with tuned presets
    (the user's profiles first, then the shipped ones)."""
    from genaccel.profiles import profile_keys, profile_sources

    found: dict[str, dict[str, dict[str, str]]] = {}
    for key in profile_keys():
        for profile in profile_sources(key):
            for setting, table in profile.get("presets", {}).items():
                if not isinstance(table, dict):
                    continue
                for name, entry in table.items():
                    if isinstance(entry, dict) and "spec" in entry:
                        found.setdefault(key, {}).setdefault(setting, {}).setdefault(name, str(entry["spec"]))
    return found


def preset_spec(family: str, preset: str, model_key: str | None = None, setting: str | None = None) -> str:
    """The spec string of `preset` for a model (its tuned presets, its own file) or else its family."""
    tuned = tuned_presets(model_key, setting).get(preset.lower())
    if tuned:
        return str(tuned["spec"])
    for source in (model_key, family):
        if source and preset in load_presets(source):
            return load_presets(source)[preset]["spec"]
    raise SpecError(f"no preset '{preset}' for {model_key or family}")
