"""quant: int8/fp8/int4 weights and activations through torchao, applied once and removed exactly.

torchao (the `quant` extra: `pip install 'genaccel[quant]'`) replaces the weight of each `nn.Linear` with a
quantized tensor subclass; `quantize_` does it in place, the modules stay. The original weight Parameters
are kept (on CPU when the model is elsewhere, so the device holds only the quantized copy), and removal puts
them back: the pipeline is exactly what it was, without reloading anything.

Speed comes with compilation: eager int8 with dynamic activations is slower than float on CPU, and
`quant(...)+compile` fuses the activation quantization into the matmul (docs/accelerators.md has the figures).

What runs where (checked when the accelerator is installed, one line when it cannot):
- int8 weights, with or without int8 dynamic activations: any device.
- fp8 weights (fp8 dynamic activations optional): CUDA GPUs of compute capability 8.9 or newer.
- int4 weights: CUDA GPUs, with torchao's int4 kernels installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from genaccel.accelerators.base import SLOT_QUANT, Accelerator, AcceleratorConfig, param

WEIGHTS = ("int8", "fp8", "int4")
ACTIVATIONS = ("none", "int8", "fp8")
MODULES = ("transformer", "text_encoder", "all", "none")
INSTALL_HINT = "pip install 'genaccel[quant]' (or: bash install.sh quant)"


@dataclass
class QuantConfig(AcceleratorConfig):
    weights: str = param("int8", f"weight type: {', '.join(WEIGHTS)}")
    activations: str = param("int8", f"activations quantized on the fly: {', '.join(ACTIVATIONS)}")
    modules: str = param(
        "transformer", f"what is quantized: {', '.join(MODULES)} (transformer: every denoiser; none: nothing)"
    )

    def validate(self):
        for name, allowed in (("weights", WEIGHTS), ("activations", ACTIVATIONS), ("modules", MODULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if (self.weights, self.activations) not in _CONFIGS:
            raise ValueError(
                f"weights={self.weights} with activations={self.activations} is not a torchao configuration; "
                f"use one of {', '.join(f'{w}/{a}' for w, a in _CONFIGS)}"
            )


# (weights, activations) -> the torchao config class that implements it
_CONFIGS = {
    ("int8", "none"): "Int8WeightOnlyConfig",
    ("int8", "int8"): "Int8DynamicActivationInt8WeightConfig",
    ("fp8", "none"): "Float8WeightOnlyConfig",
    ("fp8", "fp8"): "Float8DynamicActivationFloat8WeightConfig",
    ("int4", "none"): "Int4WeightOnlyConfig",
}


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def device_refusal(weights: str, activations: str, device: torch.device) -> str | None:
    """Why this quantization cannot run on `device`; None if it can."""
    if "fp8" in (weights, activations):
        if device.type != "cuda":
            return f"fp8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); this is {device.type}"
        capability = torch.cuda.get_device_capability(device)
        if capability < (8, 9):
            return f"fp8 needs compute capability 8.9 or newer; this GPU has {capability[0]}.{capability[1]}"
    if weights == "int4" and device.type != "cuda":
        return f"int4 weights need a CUDA GPU (torchao's int4 kernels); this is {device.type}; use weights=int8"
    return None


class Quant(Accelerator):
    name = "quant"
    summary = "int8/fp8/int4 weights and dynamic activations through torchao (stack with compile for speed)"
    config_class = QuantConfig
    slots = frozenset({SLOT_QUANT})

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        if not torchao_available():
            raise ValueError(f"it needs torchao, not installed: {INSTALL_HINT}")
        # (module, its original weight Parameter, where it lived, whether the module had its own extra_repr)
        self._originals: list[tuple[torch.nn.Linear, torch.nn.Parameter, torch.device, bool]] = []
        self.layers = 0

    @classmethod
    def check_request(cls, config, request, profile):
        if not torchao_available():
            raise ValueError(f"it needs torchao, not installed: {INSTALL_HINT}")
        if request.offload == "sequential" and config.modules != "none":
            raise ValueError(
                "quantized weights cannot be offloaded one layer at a time (--offload sequential casts each "
                "weight as it moves, which torchao's tensors do not support): use --offload model or group"
            )

    def apply_pipeline(self, pipe, denoisers):
        from torchao import quantization

        targets = list(denoisers) if self.config.modules in ("transformer", "all") else []
        if self.config.modules in ("text_encoder", "all"):
            targets += [m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if m]
        for target in targets:
            device = next(target.parameters()).device
            refusal = device_refusal(self.config.weights, self.config.activations, device)
            if refusal:
                raise ValueError(refusal)
        config = getattr(quantization, _CONFIGS[(self.config.weights, self.config.activations)])()
        for target in targets:
            for module in target.modules():
                if isinstance(module, torch.nn.Linear):
                    weight = module.weight
                    kept = weight if weight.device.type == "cpu" else torch.nn.Parameter(weight.detach().cpu())
                    self._originals.append((module, kept, weight.device, "extra_repr" in module.__dict__))
            try:
                quantization.quantize_(target, config)
            except (ImportError, RuntimeError, NotImplementedError) as exc:
                self.restore()
                raise ValueError(
                    f"torchao cannot quantize {type(target).__name__}: {str(exc).splitlines()[0]}"
                ) from None
        self.layers = len(self._originals)

    def apply(self, denoiser):
        """Nothing per denoiser: `apply_pipeline` quantizes every target once."""

    def restore(self) -> None:
        """Put every original weight back (the same Parameter on CPU, an exact copy elsewhere)."""
        for module, kept, device, own_repr in reversed(self._originals):
            if kept.device != device:
                kept = torch.nn.Parameter(kept.detach().to(device), requires_grad=kept.requires_grad)
            module.weight = kept
            if not own_repr:
                module.__dict__.pop("extra_repr", None)  # torchao sets its own on the instance
        self._originals.clear()

    def uninstall(self):
        super().uninstall()
        self.restore()

    def stats(self):
        return {"linear_layers": self.layers}
