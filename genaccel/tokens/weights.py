"""Per-block, per-step token reduction schedules from a model's calibrated token redundancy.

`genaccel calibrate` measures, at every self-attention layer and denoising step of a few plain generations,
how alike the video tokens entering the layer are to their 3-D cell's destination (mean cosine similarity,
`matching.cell_similarity`), and writes the mean per layer and step into the model's profile:

    [tokens]
    cell = [2, 2, 2]
    similarity = [[...one value per step...], ...one row per layer...]

`ReductionSchedule` turns that table into weights: merging a layer's tokens at a step costs about
1 - similarity, so each (layer, step) gets a weight inversely proportional to it, normalised to a mean of 1.
An accelerator multiplies its configured ratio by the weight (capped at what the cells allow): the mean
reduction stays the configured one, moved to the blocks and steps whose tokens are most alike. Without a
calibrated table every family's default is uniform: the same ratio everywhere after the dense first steps.
"""

from __future__ import annotations

import torch

SCHEDULES = ("uniform", "profile")


def largest_share(cell: tuple[int, int, int]) -> float:
    """The largest share of tokens a cell size lets merge: every cell keeps its destination."""
    return 1 - 1 / (cell[0] * cell[1] * cell[2])


def validate_reduction(config, ratio_fields: tuple[str, ...]) -> None:
    """The checks shared by the token accelerators' configs (cell, ratios, interval, steps, schedule)."""
    if min(config.cell) < 1:
        raise ValueError("cell sizes must be >= 1")
    most = largest_share(config.cell)
    for name in ratio_fields:
        if not 0.0 <= getattr(config, name) <= most:
            raise ValueError(f"{name} must be in [0, {most:.3g}] (every cell keeps its destination)")
    if config.interval < 1 or config.dense_steps < 0 or config.min_tokens < 0:
        raise ValueError("interval must be >= 1, dense_steps and min_tokens >= 0")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {config.schedule!r}")


class ReductionSchedule:
    """Weights (layers, steps), mean 1, from a similarity table."""

    def __init__(self, similarity):
        table = torch.as_tensor(similarity, dtype=torch.float64)
        if table.dim() != 2 or table.numel() == 0:
            raise ValueError("the token similarity table must be one row per layer, one column per step")
        cost = (1 - table).clamp(min=1e-3)
        weights = 1 / cost
        self.weights = weights / weights.mean()

    @classmethod
    def from_profile(cls, profile: dict) -> "ReductionSchedule":
        table = profile.get("tokens", {}).get("similarity")
        if not table:
            raise ValueError(
                "schedule=profile needs this model's token redundancy: run `genaccel calibrate` on it first"
            )
        return cls(table)

    def weight(self, layer: int, step: int | None, num_steps: int) -> float:
        """The weight of a layer at a step of a run of `num_steps` steps (calibrated steps are matched by their
        relative position in the run; layers beyond the table take its last row)."""
        layers, steps = self.weights.shape
        row = min(max(layer, 0), layers - 1)
        if step is None or num_steps <= 1 or steps == 1:
            column = 0 if step is None else min(step, steps - 1)
        else:
            column = min(round(step * (steps - 1) / (num_steps - 1)), steps - 1)
        return float(self.weights[row, column])

    def ratio(self, base: float, most: float, layer: int, step: int | None, num_steps: int) -> float:
        """`base` scaled by the weight, capped at `most`."""
        return min(most, base * self.weight(layer, step, num_steps))
