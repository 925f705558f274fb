"""Presets `quality`, `balanced`, `fast`, and presets a user tuned (`genaccel tune --save-as NAME`).

Where a preset is looked up, first match wins:
1. the model's profiles (the user's, then the one shipped with the package): `[presets.SETTING.NAME]`
   tables written by `genaccel tune`, for the run's setting, then for the default setting;
2. pipelines/presets/<model>.toml, then pipelines/presets/<family>.toml: spec strings kept as data.

`presets_for` computes that table from profiles already read (a run reads them once, into
`genaccel.models.facts.ModelFacts`); spec resolution takes its result as an argument and reads no file.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Iterable

import tomllib

from genaccel.errors import SpecError

BUILT_IN = ("quality", "balanced", "fast")


@lru_cache(maxsize=None)
def load_presets(name: str) -> dict[str, dict]:
    """The presets table of a family or model shipped with the package (read once per process); empty if
    there is no such file."""
    path = resources.files("genaccel.pipelines").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        return {}
    return tomllib.loads(path.read_text())


def tuned_presets(profiles: Iterable[dict], setting: str | None = None) -> dict[str, dict]:
    """Preset name -> its table (spec and the figures it was tuned to) in a model's profiles (the user's
    first), for `setting`, falling back to the default setting's; the first profile to name a preset wins."""
    found: dict[str, dict] = {}
    for profile in profiles:
        tables = profile.get("presets", {})
        for name in dict.fromkeys([setting or "default", "default"]):
            for preset, table in tables.get(name, {}).items():
                if isinstance(table, dict) and "spec" in table:
                    found.setdefault(preset.lower(), table)
    return found


def presets_for(
    family: str, model_key: str | None = None, profiles: Iterable[dict] = (), setting: str | None = None
) -> dict[str, str]:
    """Preset name -> spec string of every preset a model offers at `setting`: tuned ones first, then the
    model's preset file, then its family's (built-in names first in the order)."""
    found = {name: str(table["spec"]) for name, table in tuned_presets(profiles, setting).items()}
    for source in (model_key, family):
        for name, table in (load_presets(source) if source else {}).items():
            found.setdefault(name, str(table["spec"]))
    order = [name for name in BUILT_IN if name in found] + [name for name in found if name not in BUILT_IN]
    return {name: found[name] for name in order}


def preset_names(
    model_key: str | None = None, setting: str | None = None, *, profiles: Iterable[dict] | None = None
) -> list[str]:
    """The presets a model offers: the built-in names, then the ones tuned for it (from `profiles` when the
    caller read them, e.g. `ModelFacts.profiles`; else its profiles are read)."""
    if profiles is None:
        from genaccel.models.profiles import read_profiles

        profiles = read_profiles(model_key) if model_key else ()
    return list(dict.fromkeys([*BUILT_IN, *tuned_presets(profiles, setting)]))


def preset_spec(family: str, preset: str, model_key: str | None = None, setting: str | None = None) -> str:
    """The spec string of `preset` for a model (its tuned presets, its own file) or else its family; reads the
    model's profiles (a run has them in its ModelFacts: use `ModelFacts.presets`)."""
    from genaccel.models.profiles import read_profiles

    found = presets_for(family, model_key, read_profiles(model_key) if model_key else (), setting)
    if preset.lower() not in found:
        raise SpecError(f"no preset '{preset}' for {model_key or family}")
    return found[preset.lower()]


def any_tuned_name(name: str) -> bool:
    """True if some profile on this machine has a tuned preset called `name` (checks without a model)."""
    name = name.lower()
    return any(
        name in {k.lower() for k in names} for settings in tuned_by_model().values() for names in settings.values()
    )


def tuned_by_model() -> dict[str, dict[str, dict[str, str]]]:
    """{model key: {setting: {preset: spec}}} for every profile on this machine with tuned presets
    (the user's profiles first, then the shipped ones)."""
    from genaccel.models.profiles import profile_keys, read_profiles

    found: dict[str, dict[str, dict[str, str]]] = {}
    for key in profile_keys():
        for profile in read_profiles(key):
            for setting, table in profile.get("presets", {}).items():
                if not isinstance(table, dict):
                    continue
                for name, entry in table.items():
                    if isinstance(entry, dict) and "spec" in entry:
                        found.setdefault(key, {}).setdefault(setting, {}).setdefault(name, str(entry["spec"]))
    return found
