"""What a run needs to know of its model, read once: `ModelFacts`.

A run reads its model's facts once, before anything else: the family (from the pipeline class), genaccel's
call defaults and named settings (the model folder's genaccel.toml), a frame count the config fixes, and the
model's calibrated profiles (`genaccel.models.profiles`, each file read once). From a model folder they are
read before any weight loads (`model_facts`); from a loaded pipeline with `ModelFacts.of`. Everything
downstream (`genaccel.generation.prepare`, spec resolution, the accelerators' profile checks, the engine)
takes them as an argument and reads no file again.

Also here: the names of the models genaccel ships (`tiny`, `tiny-causal`, `tiny-<family>`) and where they live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from genaccel.errors import InputError, ModelError
from genaccel.models.files import read_json, read_toml
from genaccel.models.presets import presets_for
from genaccel.models.profiles import model_key, pipeline_model_key, read_profiles
from genaccel.pipelines.families import FAMILIES, FamilyAdapter, family_of

EMBEDDED = "tiny"  # the embedded trained model shipped in the package (pipelines/embedded)
# Its block-causal streaming variant (pipelines/embedded-causal: the transformer, the rest from the base).
EMBEDDED_CAUSAL = "tiny-causal"
TINY_PREFIX = "tiny-"
# Optional file in a model folder with genaccel's default call settings for it (height, width,
# num_frames, num_inference_steps, guidance_scale, and an [extra] table of pipeline kwargs).
MODEL_SETTINGS_FILE = "genaccel.toml"
# Request fields that a model's defaults (genaccel.toml, the tiny pipelines' table) may fill.
DEFAULTED = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale")


@dataclass(frozen=True)
class ModelFacts:
    """What checking and running a request needs to know of a model, read once per run."""

    family: FamilyAdapter
    key: str  # the profile and preset key
    defaults: dict  # genaccel's call defaults, with their named settings ({} where genaccel knows none)
    fixed_frames: int | None = None  # the frame count the model's config fixes (Latte), else None
    profiles: tuple[dict, ...] = field(default=(), repr=False)  # the user's profile, then the shipped one

    @classmethod
    def of(cls, pipe, profiles: tuple[dict, ...] | None = None) -> "ModelFacts":
        """The facts of a loaded pipeline, its profiles read now (unless given: `profiles`)."""
        family = family_of(pipe)
        key = pipeline_model_key(pipe)
        return cls(
            family,
            key,
            getattr(pipe, "_genaccel_defaults", None) or {},
            family.fixed_frames(pipe),
            read_profiles(key) if profiles is None else profiles,
        )

    @property
    def profile(self) -> dict:
        """The calibrated profile the accelerators read: the user's, else the shipped one ({} if none)."""
        return self.profiles[0] if self.profiles else {}

    def settings(self) -> list[str]:
        """Names of the settings the model offers ("default" always)."""
        return settings_of(self.defaults)

    def setting_defaults(self, setting: str = "default") -> dict[str, Any]:
        return setting_defaults(self.defaults, setting)

    def presets(self, setting: str | None = None) -> dict[str, str]:
        """Preset name -> spec string of every preset this model offers at `setting`."""
        return presets_for(self.family.name, self.key, self.profiles, setting)


def settings_of(table: dict) -> list[str]:
    """Names of the settings of a model's defaults table ("default" always)."""
    return ["default", *table.get("settings", {})]


def setting_defaults(table: dict, setting: str = "default") -> dict[str, Any]:
    """The call defaults of one setting out of a model's defaults table (genaccel.toml's), with the setting's
    extra pipeline arguments under "extra"."""
    defaults = dict(table)
    settings = defaults.pop("settings", {})
    _check_defaults(defaults, "")
    if setting != "default":
        if setting not in settings:
            raise InputError(f"this model has no '{setting}' setting (settings: {', '.join(settings_of(table))})")
        chosen = dict(settings[setting])
        _check_defaults(chosen, f"[settings.{setting}] ")
        extra = {**defaults.get("extra", {}), **chosen.pop("extra", {})}
        defaults.update(chosen, extra=extra)
    return defaults


def _check_defaults(table: dict, where: str) -> None:
    """A model's defaults name request fields (and an [extra] table of pipeline arguments), nothing else."""
    unknown = set(table) - set(DEFAULTED) - {"extra"}
    if unknown:
        raise ModelError(
            f"the model's genaccel.toml: {where}unknown key(s) {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(DEFAULTED)}, [extra])"
        )


def model_settings(pipe) -> list[str]:
    """Names of the settings a loaded model offers ("default" always)."""
    return settings_of(getattr(pipe, "_genaccel_defaults", None) or {})


def model_defaults(pipe, setting: str = "default") -> dict[str, Any]:
    """Call defaults of a loaded pipeline for a setting, with the setting's extra pipeline arguments
    under "extra" (empty where genaccel knows nothing: the pipeline's own defaults apply)."""
    return setting_defaults(getattr(pipe, "_genaccel_defaults", None) or {}, setting)


# ----------------------------------------------------------------------------- model names and folders
def embedded_model_dir(name: str = "embedded") -> Path:
    """Folder of an embedded model inside the installed package ("embedded", "embedded-causal")."""
    return Path(str(resources.files("genaccel.pipelines").joinpath(name)))


def is_model_folder(path: Path) -> bool:
    """A diffusers pipeline folder, or a folder whose genaccel.toml names a `base` pipeline it overrides."""
    if (path / "model_index.json").is_file():
        return True
    settings = path / MODEL_SETTINGS_FILE
    return settings.is_file() and "base" in read_toml(settings)


def default_model() -> str:
    """The embedded model when its weights are installed, else the tiny random Wan pipeline."""
    return EMBEDDED if (embedded_model_dir() / "model_index.json").is_file() else f"{TINY_PREFIX}wan"


def is_built_in_code(name: str) -> bool:
    """True for the tiny random-weight pipelines built in code (`tiny-wan`, ...)."""
    return name.startswith(TINY_PREFIX) and name != EMBEDDED_CAUSAL


def model_path(name: str) -> Path:
    """Where a model that is not built in code lives: the embedded models' folders, else `name` as a path."""
    if name == EMBEDDED:
        return embedded_model_dir()
    if name == EMBEDDED_CAUSAL:
        return embedded_model_dir("embedded-causal")
    return Path(name).expanduser()


def folder_settings(path: Path) -> dict:
    """A model folder's genaccel.toml ({} without one)."""
    return read_toml(path / MODEL_SETTINGS_FILE) if (path / MODEL_SETTINGS_FILE).is_file() else {}


def model_facts(model: str | None) -> ModelFacts | None:
    """A model's facts read from its folder's configs and its profiles, without loading any weight (a broken
    file is a ModelError naming it). None where the files do not tell the family: hub ids, models built in
    code, folders over a base (`ModelFacts.of` reads them once the pipeline is loaded)."""
    name = (model or default_model()).strip()
    if is_built_in_code(name):
        return None
    path = model_path(name)
    if not (path / "model_index.json").is_file():
        return None
    settings = folder_settings(path)
    if "base" in settings:
        return None
    settings.pop("stream", None)
    index = read_json(path / "model_index.json", path)
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    family = next((f for f in FAMILIES.values() if class_name in f.pipeline_classes), None)
    if family is None:
        return None  # loading says what is wrong with it
    fixed = None
    if family.frames_config_attr:
        config = read_json(path / family.denoisers[0] / "config.json", path)
        fixed = config.get(family.frames_config_attr) if isinstance(config, dict) else None
    key = model_key(name)
    return ModelFacts(family, key, settings, fixed if isinstance(fixed, int) else None, read_profiles(key))


def builtin_models() -> dict[str, str]:
    """Model names that need no download, with a description."""
    from genaccel.pipelines.tiny import TINY_FAMILIES

    models = {}
    if (embedded_model_dir() / "model_index.json").is_file():
        models[EMBEDDED] = "embedded trained Wan-format text-to-video model of moving shapes (default)"
        if is_model_folder(embedded_model_dir("embedded-causal")):
            models[EMBEDDED_CAUSAL] = "its block-causal variant for streaming (genaccel stream)"
    models.update(
        {f"{TINY_PREFIX}{name}": f"tiny random-weight {name} pipeline built in code (tests)" for name in TINY_FAMILIES}
    )
    return models
