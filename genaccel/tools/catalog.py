"""What `genaccel list` shows: models, families, accelerators with parameters, presets, the attention
backends and quantization usable on this machine, and the compatibility matrix (which accelerator applies to
which family, and which pairs stack)."""

from __future__ import annotations

import torch

from genaccel.accelerators import ACCELERATORS, unsupported_by
from genaccel.accelerators.quant import INSTALL_HINT, torchao_available
from genaccel.attention.backends import BACKENDS, unusable_reason
from genaccel.generation.spec import PRESET_NAMES, stack_conflict
from genaccel.models.presets import load_presets, tuned_by_model
from genaccel.pipelines.families import FAMILIES


def catalog() -> dict:
    from genaccel.models.facts import builtin_models, default_model

    return {
        "default_model": default_model(),
        "models": builtin_models(),
        "families": {
            f.name: {
                "title": f.title,
                "pipelines": list(f.pipeline_classes),
                "frames": f.frames_rule(),
                "size_multiple": f.size_multiple,
                "teacache_coefficients": list(f.teacache_coefficients),
                "light_decoders": f.light_decoders or None,  # TAEHV weights for --decoder light:PATH
            }
            for f in FAMILIES.values()
        },
        "accelerators": {
            name: {
                "summary": cls.summary,
                "slots": sorted(cls.slots),
                "parameters": cls.config_class.parameters(),
                "context_parallel": cls.context_parallel_refusal() or "yes",
            }
            for name, cls in ACCELERATORS.items()
        },
        "presets": {
            f.name: {p: load_presets(f.name).get(p, {}).get("spec") for p in PRESET_NAMES} for f in FAMILIES.values()
        },
        "tuned_presets": tuned_by_model(),  # model key -> setting -> preset -> spec (genaccel tune --save-as)
        "compatibility": {
            f.name: {**dict.fromkeys(ACCELERATORS, "yes"), **unsupported_by(f)} for f in FAMILIES.values()
        },
        "stacking": {a: {b: stack_conflict(a, b) or "yes" for b in ACCELERATORS if b != a} for a in ACCELERATORS},
        "attention_backends": {name: unusable_reason(name) or "yes" for name in BACKENDS},
        "systems": {
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "quant": "yes" if torchao_available() else f"torchao is not installed: {INSTALL_HINT}",
        },
    }


def compatibility_table(data: dict) -> str:
    """The family x accelerator matrix as a Markdown table (used by the README too)."""
    accels = list(data["accelerators"])
    lines = ["| family | " + " | ".join(accels) + " |", "|---" * (len(accels) + 1) + "|"]
    for family, row in data["compatibility"].items():
        cells = ["yes" if row[a] == "yes" else "no*" for a in accels]
        lines.append(f"| {data['families'][family]['title']} | " + " | ".join(cells) + " |")
    notes = [
        f"- {data['families'][f]['title']} / {a}: {why}"
        for f, row in data["compatibility"].items()
        for a, why in row.items()
        if why != "yes"
    ]
    return "\n".join(lines + ([""] + ["\\* not supported:"] + notes if notes else []))


def format_catalog(data: dict) -> str:
    out = ["Models (built in; also any local diffusers folder or hub id of a supported family):"]
    out += [f"  {name:20s} {desc}" for name, desc in data["models"].items()]
    out += [f"  default: {data['default_model']}", "", "Accelerators (spec: name(key=value,...)+name):"]
    for name, info in data["accelerators"].items():
        out.append(f"  {name:12s} {info['summary']}")
        if info["context_parallel"] != "yes":
            out.append(f"      (not with --context-parallel: {info['context_parallel']})")
        for p in info["parameters"]:
            default = ":".join(map(str, p["default"])) if isinstance(p["default"], tuple) else p["default"]
            out.append(f"      {p['name'] + '=' + str(default):22s} {p['help']} ({p['type']})")
    systems = data["systems"]
    out += ["", f"Attention backends (--attention; on this machine's {systems['device']}):"]
    out += [
        f"  {name:13s} {'usable' if why == 'yes' else 'no: ' + why}" for name, why in data["attention_backends"].items()
    ]
    out += ["", f"quant (torchao): {'usable' if systems['quant'] == 'yes' else 'no: ' + systems['quant']}"]
    out += ["", "Light decoders (--decoder light: the model's own; light:PATH: TAEHV weights for the family):"]
    out += [f"  {info['title']:20s} {info['light_decoders'] or 'none'}" for info in data["families"].values()]
    out += ["", "Presets (--accel quality|balanced|fast):"]
    for family, presets in data["presets"].items():
        out.append(f"  {data['families'][family]['title']}:")
        out += [f"      {p:9s} {spec}" for p, spec in presets.items()]
    if data.get("tuned_presets"):
        out += ["", "Presets tuned for a model (genaccel tune --save-as; they win over the family's):"]
        for key, settings in data["tuned_presets"].items():
            for setting, presets in settings.items():
                out.append(f"  {key} ({setting} setting):")
                out += [f"      {p:9s} {spec}" for p, spec in presets.items()]
    out += [
        "",
        "Compatibility (tested on every family's tiny pipeline):",
        compatibility_table(data),
        "",
        "Stacking: accelerators stack unless they take over the same thing:",
    ]
    names = list(data["accelerators"])
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            why = data["stacking"][a][b]
            out.append(f"  {a} + {b}: {'yes' if why == 'yes' else 'no (' + why + ')'}")
    return "\n".join(out)
