"""Resolving `--model`: built-in tiny pipelines, local diffusers folders, hub ids; device choice.

Nothing is fetched implicitly during tests: tiny models are built in code, local folders load
with `local_files_only=True`, and a hub id is only loaded when a user asks for one.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import torch

from genaccel.decoding.light import SHIPPED_FOLDER
from genaccel.errors import ModelError
from genaccel.models.facts import (
    EMBEDDED,
    EMBEDDED_CAUSAL,
    MODEL_SETTINGS_FILE,
    TINY_PREFIX,
    builtin_models,
    default_model,
    folder_settings,
    is_built_in_code,
    is_model_folder,
    model_path,
)
from genaccel.models.files import check_model_folder
from genaccel.models.profiles import model_key

log = logging.getLogger("genaccel")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available; asking for CUDA without it is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelError(f"unknown device '{device}' (use auto, cpu or cuda)")
    return torch.device(device)


@lru_cache(maxsize=None)
def _note_attention_backend(note: str) -> None:
    # True of every run on this machine, so not a warning: shown with --verbose, once per process.
    log.info("%s", note)


def attention_backend(family, device_type: str, xformers_available: bool) -> tuple[str, str]:
    """What computes `family`'s attention: ("xformers" or "sdpa", a one-line note saying why).

    xformers runs only on CUDA, when installed, and for families whose attention goes through
    diffusers' dispatch; the others' processors call PyTorch SDPA themselves.
    """
    if device_type != "cuda":
        return "sdpa", "CPU: xformers needs CUDA, attention runs on PyTorch SDPA"
    if not family.attention_dispatch:
        return "sdpa", (
            f"{family.title}'s attention processors call PyTorch SDPA directly, not diffusers' "
            "attention dispatch: attention runs on PyTorch SDPA"
        )
    if not xformers_available:
        return "sdpa", "xformers is not installed (pip install 'genaccel[cuda]'): attention runs on PyTorch SDPA"
    return "xformers", "attention runs on xformers through diffusers' attention dispatch"


def _xformers_available() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def select_attention_backend(pipe, device: torch.device, family) -> str:
    """Set xformers on the denoisers where `attention_backend` picks it; say once what runs otherwise."""
    backend, note = attention_backend(family, device.type, device.type == "cuda" and _xformers_available())
    if backend == "xformers":
        for _, module in family.denoiser_modules(pipe):
            module.set_attention_backend("xformers")
    else:
        _note_attention_backend(note)
    return backend


def load_pipeline(
    model: str | None = None,
    device: str = "auto",
    dtype: torch.dtype | None = None,
    *,
    offload: str | None = "none",
    vae_tiling: bool | None = None,
    context_parallel: str | None = None,
):
    """Load a pipeline by name: `tiny-<family>`, a local diffusers folder, or a hub id.

    The pipeline is placed on `device` with `offload` and `vae_tiling` (see `genaccel.memory.offload`);
    `offload=None` leaves the weights on the CPU for the first generation to place, which lets a caller
    check the memory estimate (`genaccel.generation.prepare`) before anything moves to the device.
    `context_parallel` ("ring=N", "ulysses=N") splits each generation's sequence across the processes a
    launcher started (see `genaccel.engine.distributed`), from the first generation on.
    """
    from genaccel.pipelines.families import family_of

    name = (model or default_model()).strip()
    target = resolve_device(device)
    if is_built_in_code(name):
        from genaccel.pipelines.tiny import TINY_FAMILIES, build_tiny_pipeline

        family_name = name[len(TINY_PREFIX) :]
        if family_name not in TINY_FAMILIES:
            raise ModelError(f"unknown model '{name}' (built-in: {', '.join(builtin_models())})")
        from genaccel.pipelines.tiny import TINY_CALL_DEFAULTS

        pipe = build_tiny_pipeline(family_name)
        pipe._genaccel_defaults = TINY_CALL_DEFAULTS[family_name]
        key = name
    else:
        path = model_path(name)
        if name in (EMBEDDED, EMBEDDED_CAUSAL) and not is_model_folder(path):
            raise ModelError(
                f"the embedded {'causal ' if name == EMBEDDED_CAUSAL else ''}model's weights are "
                "not installed in this copy of genaccel"
            )
        if path.exists():
            if not is_model_folder(path):
                raise ModelError(f"{name} is not a diffusers pipeline folder (no model_index.json)")
            source, local = str(path), True
        elif _HUB_ID.match(name) and not name.startswith((".", "/")):
            source, local = name, False
        else:
            raise ModelError(f"unknown model '{name}': not a built-in name, an existing folder, or a hub id (org/name)")
        settings = folder_settings(path) if local else {}
        if local and "base" not in settings:
            check_model_folder(path)  # every config and weight header, before diffusers reads any of them
        dtype = dtype or (torch.bfloat16 if target.type == "cuda" else torch.float32)
        light_dirs = [path / SHIPPED_FOLDER]
        if "base" in settings:
            base = settings.pop("base")
            pipe = _from_base(path, base, dtype)
            light_dirs.append((path / base).resolve() / SHIPPED_FOLDER)
        else:
            pipe = _from_pretrained(source, local, dtype)
        shipped = next((d for d in light_dirs if local and (d / "config.json").is_file()), None)
        if shipped is not None:  # loaded when a request or a preview first asks for it
            pipe._genaccel_light_decoder_dir = shipped
        key = model_key(name)
        stream = settings.pop("stream", None)
        if settings:
            pipe._genaccel_defaults = settings
        if stream:
            pipe._genaccel_stream = stream
    pipe._genaccel_model_key = key
    pipe._genaccel_device = target
    family = family_of(pipe)
    if context_parallel:
        from genaccel.engine.distributed import context_parallel_refusal, parse_context_parallel

        degrees = parse_context_parallel(context_parallel)
        reason = context_parallel_refusal(pipe, family, (), degrees)
        if reason:
            raise ModelError(reason)
        pipe._genaccel_context_parallel = degrees
    select_attention_backend(pipe, target, family)
    if getattr(pipe, "_genaccel_stream", None):
        from genaccel.engine.acceleration import NO_SPEC, install

        install(pipe, NO_SPEC, {})  # installs the attention its [stream] table declares (block-causal) under every spec
    if offload is not None:
        from genaccel.memory.offload import place

        place(pipe, offload, vae_tiling)
    return pipe


def _from_base(path: Path, base: str, dtype: torch.dtype):
    """A pipeline from the `base` folder named in `path`'s genaccel.toml (relative to `path`), with each
    component that `path` has a subfolder for (e.g. transformer/) loaded from there instead."""
    from genaccel.models.files import check_component

    if not isinstance(base, str):
        raise ModelError(f"{path / MODEL_SETTINGS_FILE}: base must be the path of a pipeline folder")
    base_path = (path / base).resolve()
    if not (base_path / "model_index.json").is_file():
        raise ModelError(f"{path}: its base pipeline {base_path} is not a diffusers pipeline folder")
    check_model_folder(base_path)
    pipe = _from_pretrained(str(base_path), True, dtype)
    for name in pipe.components:
        if (path / name / "config.json").is_file():
            check_component(path / name, path)
            component = getattr(pipe, name)
            try:
                replacement = type(component).from_pretrained(path / name, dtype=dtype, local_files_only=True)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"cannot load {path / name}: {first}") from None
            pipe.register_modules(**{name: replacement})
    return pipe


def _from_pretrained(source: str, local: bool, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    try:
        # Safetensors only: a pickle weight file can run code when loaded.
        return DiffusionPipeline.from_pretrained(
            source, torch_dtype=dtype, local_files_only=local, use_safetensors=True
        )
    except Exception as exc:  # diffusers/hub raise many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model '{source}': {first}") from None
