"""compile: torch.compile of the denoiser, beneath every accelerator's hooks, compiled once per shape.

Either each transformer block is a compiled unit (`scope="blocks"`, regional, as diffusers'
`compile_repeated_blocks`: the identical blocks share one graph) or the whole denoiser is (`scope="model"`).
`auto` takes the family's measured choice (`FamilyAdapter.compile_scope`): the whole model for Wan, measured on
the embedded model (BENCHMARKS.md), blocks elsewhere.

Why beneath the hooks. The accelerators decide in Python, per step and CFG branch, from state that changes
every call (step counters, cached residuals, call counts). Traced by dynamo, each such value becomes a guard
and every new value a recompilation, until dynamo gives up and runs the model eagerly. So nothing that
decides is ever traced:

- A `CompiledBodyHook` goes innermost on each unit and on each attention module (`apply_inner`, which the
  acceleration runs before it registers anything else). It runs the module's class forward, the pure tensor
  computation, through `torch.compile`: one code object for every block and every install, so dynamo's cache
  serves the identical blocks and a later install of the same stack alike.
- In `apply_outer`, once every other hook is on, a `BoundaryHook` goes outermost on each module inside a unit
  whose hooks decide (PAB's attention cache, the attention seam, token merging): its hook chain runs eagerly
  (`torch.compiler.disable`), the unit's graph breaks around the call, and the module's own body is again a
  compiled unit below it.
- A module inside a unit that carries only the acceleration's call counters is traced into the unit's graph,
  with its hooks taken off: dynamo would guard on the identity of each module's hooked forward, one per
  block. The unit counts its calls outside the graph (`CompiledBodyHook.counted`).
- The attention seam calls its kernel outside the graph (genaccel.attention.processor): the sparse kernels
  keep their own compiled FlexAttention.

Recompilation is then bounded by shapes and by each unit's constant branches, all seen in the first step;
`stats()` counts the graphs compiled in each generation and the seconds spent compiling (`compile_seconds`),
which the bench and the tuner spend in an untimed warm-up. tests/test_compile.py reads dynamo's counters
across whole generations for compile stacked with every accelerator of the matrix.

`backend="eager"` (dynamo's tracing without code generation) lets the tests check guards in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accelerators.base import SLOT_COMPILE, Accelerator, AcceleratorConfig, param

BODY_HOOK = "genaccel_compiled_body"
BOUNDARY_HOOK = "genaccel_compile_boundary"
SCOPES = ("auto", "blocks", "model")
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKENDS = ("inductor", "aot_eager", "eager")
RECOMPILE_LIMIT = 64  # cache entries per code object: compiled forms of one block (see apply_inner)


@dataclass
class CompileConfig(AcceleratorConfig):
    scope: str = param(
        "auto",
        "compiled unit: blocks (each transformer block, regional), model (the whole denoiser), or auto "
        "(the family's measured choice)",
    )
    mode: str = param("default", f"torch.compile mode: {', '.join(MODES)} (reduce-overhead: CUDA graphs)")
    fullgraph: bool = param(False, "demand one graph per compiled unit where no boundary breaks it")
    dynamic: bool = param(False, "compile for dynamic shapes (off: one graph per shape, the fastest)")
    backend: str = param("inductor", "dynamo backend: inductor (code generation), aot_eager or eager (tracing only)")

    def validate(self):
        for name, allowed in (("scope", SCOPES), ("mode", MODES), ("backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if self.mode != "default" and self.backend != "inductor":
            raise ValueError("mode applies to the inductor backend only")


class CompiledBodyHook(ModelHook):
    """Innermost on a module: its own forward runs compiled (compiled at the first call, then reused). The
    call counters of the modules traced into its graph (`counted`) are counted here, outside the graph."""

    compile_transparent = True

    def __init__(self, options: dict):
        super().__init__()
        self.options = options  # torch.compile keyword arguments, shared by the accelerator's hooks
        self.fullgraph = False  # set in apply_outer: the body holds no boundary
        self.counted: list = []  # CallCounterHooks traced into this body's graph, one call each per body call
        self.compiled = None

    def initialize_hook(self, module):
        forward = getattr(module.forward, "__func__", None)
        if forward is not type(module).forward:  # it must be innermost: apply_inner runs before any other hook
            raise RuntimeError(f"compile: {type(module).__name__} already carries hooks of its own")
        return module

    def new_forward(self, module, *args, **kwargs):
        if torch.compiler.is_compiling():  # traced into an enclosing unit's graph
            return self.fn_ref.original_forward(*args, **kwargs)
        if self.compiled is None:
            # The class's forward, not a bound method: one code object for every install, so a later install
            # of the same stack finds dynamo's cached graphs.
            self.compiled = torch.compile(type(module).forward, fullgraph=self.fullgraph, **self.options)
        output = self.compiled(module, *args, **kwargs)
        for counter in self.counted:
            counter.calls += 1
        return output


class BoundaryHook(ModelHook):
    """Outermost on a hooked module inside a compiled unit: its hook chain runs eagerly (a graph break).

    Its tensors come back contiguous: a cache that returns a stored or forecast output where the module returns
    views (CogVideoX's attention splits one joint tensor) would otherwise hand the graph other strides, and
    dynamo guards on strides."""

    @torch.compiler.disable
    def new_forward(self, module, *args, **kwargs):
        return _contiguous(self.fn_ref.original_forward(*args, **kwargs))


def _contiguous(output):
    if isinstance(output, torch.Tensor):
        return output.contiguous()
    if isinstance(output, (tuple, list)):
        return type(output)(_contiguous(o) for o in output)
    return output


class Compile(Accelerator):
    name = "compile"
    summary = "torch.compile of each block (or the model) beneath every cache's hooks, compiled once per shape"
    config_class = CompileConfig
    slots = frozenset({SLOT_COMPILE})
    outer_rank = 1  # its boundaries go on after every other accelerator's outer hooks

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        c = config
        self.options = {"dynamic": c.dynamic, "backend": c.backend}
        if c.mode != "default":
            self.options["mode"] = c.mode
        self.bodies: list[tuple[torch.nn.Module, CompiledBodyHook]] = []
        self._graphs_at_start = 0
        self._compile_seconds_at_start = 0.0

    @classmethod
    def check_request(cls, config, request, profile):
        if request.attention == "flex" and config.backend == "inductor":
            # diffusers' flex backend calls flex_attention on 3-D block masks that inductor cannot lower
            # inside a larger graph (torch 2.13: "not enough values to unpack"); its own call compiles it.
            raise ValueError("--attention flex does not compile inside the model's graph: use --attention native")

    @property
    def scope(self) -> str:
        return self.family.compile_scope if self.config.scope == "auto" else self.config.scope

    def units(self, denoiser) -> list[torch.nn.Module]:
        """The modules compiled as wholes: the denoiser, or its blocks."""
        if self.scope == "model":
            return [denoiser]
        return [block for _, block in self.family.blocks(denoiser)]

    def apply_inner(self, denoiser):
        # Each compiled form of a block (float or quantized weights; its attention traced or behind a boundary)
        # is one more cache entry of the same code object. Past dynamo's default limit of 8, a bench or a tune
        # that tries many stacks would silently run eagerly.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # Blocks and attention modules are bodies in either scope: when a cache's hooks make one a boundary,
        # its own computation still runs compiled. In the whole-model scope an unhooked one is traced into
        # the model's graph instead (apply_outer takes its body hook off).
        bodies = {id(m): m for m in self.units(denoiser)}
        for module in [
            *(b for _, b in self.family.blocks(denoiser)),
            *(a for _, a in self.family.attention_layers(denoiser)),
        ]:
            bodies.setdefault(id(module), module)
        for module in bodies.values():
            hook = CompiledBodyHook(self.options)
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, BODY_HOOK)
            self.bodies.append((module, hook))

    def apply(self, denoiser):
        """Nothing in spec order: see `apply_inner` and `apply_outer`."""

    def apply_outer(self, denoiser, accelerators):
        bodies = {id(module): hook for module, hook in self.bodies}
        graphs = list(self.units(denoiser))  # modules whose body is a graph of its own
        while graphs:
            body = graphs.pop(0)
            hook = bodies[id(body)]
            inside = _hooked_inside(body)
            hook.fullgraph = self.config.fullgraph and not inside
            for module in inside:  # its hooks decide: they run eagerly, its body is a graph of its own
                HookRegistry.check_if_exists_or_initialize(module).register_hook(BoundaryHook(), BOUNDARY_HOOK)
                if id(module) in bodies:
                    graphs.append(module)
            # Traced into this graph, a module keeps no hook: dynamo would guard on the identity of its hooked
            # forward, one per module, and identical blocks (or a later install) could not share the graph.
            # Its call counters are counted by this body, outside the graph.
            for module in _traced_inside(body):
                hook.counted += [h for h in _hooks(module) if hasattr(h, "calls")]
                _unhook(module)
                bodies.pop(id(module), None)
        self.bodies = [(m, h) for m, h in self.bodies if id(m) in bodies]

    def on_generation_start(self):
        self._graphs_at_start = compiled_graphs()
        self._compile_seconds_at_start = compile_seconds()

    def reset(self):
        self.on_generation_start()

    def stats(self):
        return {
            "graphs_compiled": compiled_graphs() - self._graphs_at_start,
            "compile_seconds": round(compile_seconds() - self._compile_seconds_at_start, 3),
        }


def _hooks(module: torch.nn.Module) -> list[ModelHook]:
    registry = getattr(module, "_diffusers_hook", None)
    return list(registry.hooks.values()) if registry is not None else []


def _unhook(module: torch.nn.Module) -> None:
    """Take every hook off `module` and give it back its class's forward."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or not registry.hooks:
        return
    for name in reversed(list(registry.hooks)):
        registry.remove_hook(name, recurse=False)
    module.__dict__.pop("forward", None)  # diffusers leaves the bound forward as an instance attribute


def _opaque(module: torch.nn.Module) -> bool:
    """Whether a module's hooks must stay out of a graph: any hook but the compile-transparent ones (call
    counters, compiled bodies) decides or keeps state in Python."""
    return any(not getattr(hook, "compile_transparent", False) for hook in _hooks(module))


def _hooked_inside(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules strictly inside `module` whose hooks must stay out of its graph, none inside another."""
    found: list[torch.nn.Module] = []
    for child in module.children():
        if _opaque(child):
            found.append(child)
        else:
            found.extend(_hooked_inside(child))
    return found


def _traced_inside(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules strictly inside `module` traced into its graph (not behind a boundary)."""
    found: list[torch.nn.Module] = []
    for child in module.children():
        if not _opaque(child):
            found.append(child)
            found.extend(_traced_inside(child))
    return found


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (a recompilation adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def compile_seconds() -> float:
    """Seconds this process has spent in dynamo's compiler (tracing and code generation)."""
    from torch._dynamo.utils import compilation_time_metrics

    return float(sum(compilation_time_metrics.get("_compile.compile_inner", [])))


__all__ = ["Compile", "CompileConfig", "compile_seconds", "compiled_graphs"]
