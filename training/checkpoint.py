"""Training checkpoints as safetensors (no pickle): tensors by name plus JSON metadata.

Model and EMA state dicts are stored under "model." and "ema." prefixes, the optimizer's
per-parameter tensors under "optim.<index>.<name>", RNG states as uint8 tensors, and scalars
(step, anything JSON) in the file's metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_checkpoint(
    path: Path,
    *,
    modules: dict[str, torch.nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generators: dict[str, torch.Generator] | None = None,
    **meta,
) -> None:
    """Write atomically: tensors of `modules` and `optimizer`, generator states, and JSON `meta`."""
    tensors = {}
    for prefix, module in (modules or {}).items():
        tensors.update({f"{prefix}.{k}": v.detach().contiguous().clone() for k, v in module.state_dict().items()})
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).contiguous().clone()
    for name, generator in (generators or {}).items():
        tensors[f"rng.{name}"] = generator.get_state()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def export_weights(source: Path, target: Path) -> None:
    """Copy a checkpoint without its optimizer tensors (small enough to commit between sessions)."""
    tensors = {k: v for k, v in load_file(str(source)).items() if not k.startswith("optim.")}
    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=metadata)


def read_meta(path: Path) -> dict:
    """The JSON metadata of a checkpoint, without loading its tensors."""
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["meta"])


def load_checkpoint(
    path: Path,
    *,
    modules: dict[str, torch.nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict:
    """Restore what `save_checkpoint` wrote into the given objects; return the metadata."""
    tensors = load_file(str(path))
    for prefix, module in (modules or {}).items():
        module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    if optimizer is not None and state:  # a weights-only export restarts the optimizer's moments
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    for name, generator in (generators or {}).items():
        generator.set_state(tensors[f"rng.{name}"])
    return read_meta(path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Checkpoint tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a weights-only copy of a checkpoint (to commit it)")
    export.add_argument("source")
    export.add_argument("target")
    args = parser.parse_args()
    export_weights(Path(args.source), Path(args.target))
