"""Computed-step schedules: which denoising steps to compute fully, chosen offline (LeMiCa).

Steps are the nodes of a graph; an edge (i, j) means "compute step i, reuse its residual for steps
i+1 .. j-1, compute step j". Its weight is the error that this one span of reuse causes in the final
output, measured by `genaccel calibrate --schedule`. A schedule with a budget of B computed steps is a
path from the first step to the last through B nodes. Errors do not add up simply along a path, so the
path is chosen by lexicographic minimax: the smallest largest edge error, then the smallest second
largest, and so on (the errors of a path sorted in descending order, compared lexicographically).

The order is kept by extension: if path P beats path Q (same length) to a node, P + e beats Q + e for
any edge e, so a dynamic programme over (node, computed steps so far) finds the optimum.
"""

from __future__ import annotations

from typing import Mapping


def _key(errors: tuple[float, ...]) -> tuple[float, ...]:
    """Comparison key of a path's errors: largest first (lexicographic minimax)."""
    return tuple(sorted(errors, reverse=True))


def minimax_path(steps: int, budget: int, errors: Mapping[tuple[int, int], float]) -> list[int]:
    """The computed steps (0 and steps-1 included, ascending) of the lexicographic minimax path with
    `budget` nodes over edges `errors[(i, j)]` (i < j). Consecutive steps (j = i + 1) cost 0 when absent.

    Raises ValueError when no path of that length exists (too few edges for the budget)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if not 1 <= budget <= steps or (steps > 1 and budget < 2):
        raise ValueError(f"budget {budget}: must be within {min(2, steps)}..{steps} for {steps} steps")
    if steps == 1:
        return [0]
    weight = {(i, i + 1): 0.0 for i in range(steps - 1)}
    weight.update({(i, j): float(e) for (i, j), e in errors.items() if 0 <= i < j < steps})
    incoming: dict[int, list[tuple[int, float]]] = {}
    for (i, j), e in weight.items():
        incoming.setdefault(j, []).append((i, e))
    # best[(node, count)] = (sorted errors, previous node): the best path from 0 to node through count nodes
    best: dict[tuple[int, int], tuple[tuple[float, ...], int]] = {(0, 1): ((), -1)}
    for node in range(1, steps):
        for count in range(2, budget + 1):
            options = []
            for prev, e in incoming.get(node, ()):
                if (prev, count - 1) in best:
                    options.append((_key(best[(prev, count - 1)][0] + (e,)), prev))
            if options:
                best[(node, count)] = min(options)
    end = (steps - 1, budget)
    if end not in best:
        raise ValueError(f"no schedule of {budget} computed steps over {steps} steps with the measured spans "
                         f"(the longest measured span needs at least {_fewest(steps, weight)} computed steps)")
    path, (node, count) = [], end
    while node >= 0:
        path.append(node)
        node, count = best[(node, count)][1], count - 1
    return path[::-1]


def path_errors(path: list[int], errors: Mapping[tuple[int, int], float]) -> list[float]:
    """The edge errors along `path`, largest first (0 for consecutive steps)."""
    return list(_key(tuple(errors.get((i, j), 0.0) if j > i + 1 else 0.0 for i, j in zip(path, path[1:]))))


def _fewest(steps: int, weight: Mapping[tuple[int, int], float]) -> int:
    """The fewest nodes of any path from 0 to steps-1 over `weight`'s edges."""
    fewest = {0: 1}
    for j in range(1, steps):
        options = [fewest[i] + 1 for (i, k) in weight if k == j and i in fewest]
        if options:
            fewest[j] = min(options)
    return fewest.get(steps - 1, steps)


def all_budgets(steps: int, errors: Mapping[tuple[int, int], float]) -> dict[int, list[int]]:
    """The minimax schedule of every feasible budget, from the fewest computed steps to all of them."""
    weight = {(i, i + 1): 0.0 for i in range(steps - 1)}
    weight.update(errors)
    return {b: minimax_path(steps, b, errors) for b in range(max(_fewest(steps, weight), min(2, steps)), steps + 1)}


def skip_spans(steps: int, max_span: int, first: int = 0) -> list[tuple[int, int]]:
    """The edges to measure: every (i, j) with 2 <= j - i <= max_span, i >= first (the spans that skip)."""
    return [(i, j) for i in range(first, steps) for j in range(i + 2, min(i + max_span, steps - 1) + 1)]


def schedule_key(steps: int) -> str:
    """The profile table holding the schedules of a `steps`-step sampler (`[schedule.SETTING.steps30]`)."""
    return f"steps{steps}"


def budget_key(budget: int) -> str:
    """The key of one budget's step list within a schedule table (`computed10 = [...]`)."""
    return f"computed{budget}"
