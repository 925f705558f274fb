"""The tensors a cache accelerator keeps between transformer passes, found in its hooks' state.

An accelerator's hooks are the ones its `HookLedger` recorded (`accelerator.ledger.hooks()`). Their state is
read generically: a hook's own attributes, diffusers `StateManager`s (one state object per cache context, i.e.
CFG branch), state objects (`BaseState`), genaccel's `PerBranchState` proxies, and tuples, lists and dicts of
these, down to the tensors. Other objects a hook refers to (its module, its accelerator, configs, callbacks)
are not state and are not entered. Used for the measured memory figure (`measured_state_bytes`, which the
acceleration's opt-in state meter reports as `state_bytes` in `Acceleration.stats()`:
genaccel/engine/acceleration.py) and by LightCache, which moves the state between devices (`map_state`,
`move_state`). The estimate made before a run is each accelerator's `estimated_state_bytes`.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from genaccel.accelerators.base import PerBranchState

_STATES = (StateManager, BaseState)  # objects whose attributes are entered wherever they are found
_MAX_DEPTH = 12  # guards against unexpected deep or cyclic structures


def state_hooks(target) -> list[ModelHook]:
    """The hooks of `target`: an `Accelerator` (its ledger's hooks still registered) or hooks themselves."""
    ledger = getattr(target, "ledger", None)
    return list(target) if ledger is None else ledger.hooks()


def map_state(target, fn: Callable[[torch.Tensor], torch.Tensor], branch: str | None = None) -> None:
    """Replace every state tensor `t` of `target` (see `state_hooks`) with `fn(t)` in place; a tensor held in
    several places is mapped once, so they keep sharing the result. With `branch`, only that CFG branch's
    states are entered (of state kept per branch) besides the state kept for all branches."""
    memo: dict[int, tuple[object, object]] = {}  # id -> (original, result): originals kept alive for the walk
    for hook in state_hooks(target):
        if id(hook) not in memo:
            memo[id(hook)] = (hook, hook)
            _map_attributes(hook, fn, memo, branch, 0)


def state_tensors(target, branch: str | None = None) -> list[torch.Tensor]:
    """The distinct tensors `target`'s hooks keep (by object)."""
    found: dict[int, torch.Tensor] = {}

    def collect(t):
        found.setdefault(id(t), t)
        return t

    map_state(target, collect, branch)
    return list(found.values())


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes the tensors keep alive: each distinct storage counted once, whole (a view keeps its storage)."""
    storages: dict[tuple, int] = {}
    for t in tensors:
        try:
            storage = t.untyped_storage()
            key, size = (t.device, storage.data_ptr()), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. some subclasses)
            key, size = (t.device, id(t)), t.numel() * t.element_size()
        if key[1] == 0:  # empty storages share the null pointer
            key = (t.device, id(t))
        storages[key] = size
    return sum(storages.values())


def measured_state_bytes(target) -> int:
    """Bytes the hooks of `target` (an `Accelerator`) keep in their state right now, on any device, found by
    walking them."""
    return tensor_bytes(state_tensors(target))


def move_state(
    target, device, copy: Callable[[torch.Tensor, torch.device], torch.Tensor] | None = None, branch: str | None = None
) -> int:
    """Move every state tensor of `target` that is not on `device` there (with `copy(tensor, device)`, by
    default `tensor.to(device)`); return the bytes moved."""
    device = torch.device(device)
    copy = copy or (lambda t, d: t.to(d))
    moved = 0

    def move(t):
        nonlocal moved
        if t.device == device:
            return t
        moved += t.numel() * t.element_size()
        return copy(t, device)

    map_state(target, move, branch)
    return moved


# ------------------------------------------------------------------------ the walk
def _map(value, fn, memo, branch, depth, state=False):
    """`value` with its state tensors mapped by `fn`: containers and state objects are updated in place and
    returned; tuples are rebuilt when an item changed; anything else is returned as it is. `state`: `value`
    sits where a state object is kept (a per-branch dict), so it is entered whatever its class."""
    if depth > _MAX_DEPTH:
        return value
    key = id(value)
    if key in memo:
        return memo[key][1]
    if isinstance(value, torch.nn.Parameter):  # weights a hook refers to are not state
        return value
    if isinstance(value, torch.Tensor):
        result = fn(value)
        memo[key] = (value, result)
        return result
    if isinstance(value, tuple):
        memo[key] = (value, value)  # a cycle through a tuple ends here
        items = [_map(v, fn, memo, branch, depth + 1) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            result = type(value)._make(items) if hasattr(value, "_fields") else type(value)(items)
        else:
            result = value
        memo[key] = (value, result)
        return result
    memo[key] = (value, value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            new = _map(item, fn, memo, branch, depth + 1)
            if new is not item:
                value[i] = new
    elif isinstance(value, dict):
        _map_dict(value, fn, memo, branch, depth, per_branch=False)
    elif isinstance(value, PerBranchState):  # branch -> state
        _map_dict(object.__getattribute__(value, "_states"), fn, memo, branch, depth, per_branch=True)
    elif isinstance(value, StateManager):
        for name, attr in list(_attributes(value)):
            if name == "_state_cache" and isinstance(attr, dict):  # context name (branch) -> state
                memo[id(attr)] = (attr, attr)
                _map_dict(attr, fn, memo, branch, depth + 1, per_branch=True)
            else:
                _set_if_changed(value, name, attr, _map(attr, fn, memo, branch, depth + 1))
    elif isinstance(value, _STATES) or (state and not isinstance(value, (ModelHook, torch.nn.Module, type))):
        _map_attributes(value, fn, memo, branch, depth)
    return value


def _map_attributes(obj, fn, memo, branch, depth) -> None:
    for name, attr in list(_attributes(obj)):
        _set_if_changed(obj, name, attr, _map(attr, fn, memo, branch, depth + 1))


def _map_dict(d: dict, fn, memo, branch, depth, per_branch: bool) -> None:
    """Map a dict's values; a dict of per-branch states (keys are CFG branches) only at `branch` if given."""
    for k, item in list(d.items()):
        if per_branch and branch is not None and k != branch:
            continue
        new = _map(item, fn, memo, branch, depth + 1, state=per_branch)
        if new is not item:
            d[k] = new


def _attributes(obj):
    return getattr(obj, "__dict__", {}).items()


def _set_if_changed(obj, name, old, new) -> None:
    if new is not old:
        object.__setattr__(obj, name, new)
