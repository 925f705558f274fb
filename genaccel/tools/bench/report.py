"""Bench outputs from result rows: summary.csv, summary.md, pareto.png, and the compare video.

Speedup pairs each run with the baseline run of the same prompt, seed and repetition round; with
`--repeat`, each item's time is the median over its repetitions first. A configuration's speedup
is the median over items, with the 25th-75th percentile range as its spread. PSNR averages over
items, counting bit-identical clips as PSNR_CAP dB.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from genaccel.io.files import replace_atomic, write_atomic

PSNR_CAP = 100.0


def csv_columns(plan) -> list[str]:
    """Summary columns: timing, quality, the plan's scorer's adherence columns, memory, work skipped."""
    from genaccel.pipelines.score import scorer_named

    scorer = scorer_named(plan.scorer)
    adherence = ["adherence", *(f"adherence_{c}" for c in scorer.columns)] if scorer else []
    return [
        "accel",
        "resolved",
        "runs",
        "seconds",
        "speedup",
        "speedup_p25",
        "speedup_p75",
        "denoise_speedup",
        "psnr",
        "ssim",
        "temporal_error",
        "lpips",
        *adherence,
        "peak_memory_bytes",
        "skipped_fraction",
        "attention_reused_fraction",
        "attention_density",
        "adherence_delta_points",
    ]


def _median_by_item(rows: list[dict], field: str) -> dict[int, float]:
    per_item = defaultdict(list)
    for r in rows:
        per_item[r["item"]].append(r[field])
    return {item: statistics.median(v) for item, v in per_item.items()}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _attention_density(run: dict) -> float | None:
    """Mean fraction of attention blocks a sparse attention accelerator computed in one run (None without one)."""
    found = []
    for figures in (run.get("accelerator_stats") or {}).values():
        for part in figures.get("denoisers", [figures]) if isinstance(figures, dict) else ():
            if part.get("density") is not None and "by_layer" in part:
                found.append(part["density"])
    return float(np.mean(found)) if found else None


def _peak_memory(runs: list[dict], spec: str, memory: dict) -> int | None:
    """A configuration's peak: its fresh-process measure, else the largest in-process (CUDA) one."""
    if spec in memory:
        return memory[spec]["peak_memory_bytes"]
    peaks = [r["peak_memory_bytes"] for r in runs if r.get("peak_memory_bytes") is not None]
    return max(peaks) if peaks else None


def summarize(rows: list[dict], plan, memory: dict | None = None) -> list[dict[str, Any]]:
    """One summary row per configuration, baseline first. `memory` maps a spec to its fresh-process
    peak (DIR/memory.json)."""
    from genaccel.pipelines.score import scorer_named

    scorer = scorer_named(plan.scorer)
    columns = scorer.columns if scorer else ()
    memory = memory or {}
    by_config = defaultdict(list)
    for r in rows:
        by_config[r["config"]].append(r)
    base_seconds = _median_by_item(by_config[0], "seconds")
    base_denoise = _median_by_item(by_config[0], "denoise_seconds")
    base_adherence = None
    out = []
    for config, spec in enumerate(plan.accels):
        runs = by_config.get(config, [])
        if not runs:
            continue
        seconds = _median_by_item(runs, "seconds")
        denoise = _median_by_item(runs, "denoise_seconds")
        ratios = [base_seconds[i] / seconds[i] for i in seconds if i in base_seconds and seconds[i] > 0]
        denoise_ratios = [base_denoise[i] / denoise[i] for i in denoise if i in base_denoise and denoise[i] > 0]
        first = {r["item"]: r for r in runs if r["repeat"] == 0}.values()  # quality is the same every repetition
        psnrs = [PSNR_CAP if r.get("identical") else r["psnr"] for r in first] if config else []
        verdicts = [r["adherence"] for r in first if r.get("adherence")]
        adherence = {k: sum(v[f"{k}_ok"] for v in verdicts) / len(verdicts) for k in columns} if verdicts else {}
        if verdicts:
            adherence["all"] = sum(v["correct"] for v in verdicts) / len(verdicts)
        calls = sum(r["transformer_calls"] for r in runs)  # every call, computed or skipped
        attention = sum(r["attention_calls"] for r in runs)
        row = {
            "accel": spec,
            "resolved": runs[0]["resolved"],
            "runs": len(runs),
            "seconds": statistics.median(seconds.values()),
            "speedup": statistics.median(ratios) if ratios else None,
            "speedup_p25": _percentile(ratios, 25) if ratios else None,
            "speedup_p75": _percentile(ratios, 75) if ratios else None,
            "denoise_speedup": statistics.median(denoise_ratios) if denoise_ratios else None,
            "psnr": _mean(psnrs) if config else None,
            "ssim": _mean([r["ssim"] for r in first]) if config else None,
            "temporal_error": _mean([r["temporal_error"] for r in first]) if config else None,
            "lpips": _mean([r["lpips"] for r in first]) if config else None,
            "adherence": adherence.get("all"),
            **{f"adherence_{k}": adherence.get(k) for k in columns},
            "peak_memory_bytes": _peak_memory(runs, spec, memory),
            "skipped_fraction": sum(r["skipped_calls"] for r in runs) / calls if calls else 0.0,
            "attention_reused_fraction": sum(r["attention_reused"] for r in runs) / attention if attention else 0.0,
            "attention_density": _mean([_attention_density(r) for r in runs]),
        }
        if config == 0:
            base_adherence = row["adherence"]
        row["adherence_delta_points"] = (
            None if row["adherence"] is None or base_adherence is None else 100.0 * (row["adherence"] - base_adherence)
        )
        out.append(row)
    return out


def _fmt(value, spec: str = ".2f", none: str = "—") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def summary_markdown(summary: list[dict], plan) -> str:
    lines = [
        "| accel | speedup (p25–p75) | s/video | PSNR dB | SSIM | temporal err | LPIPS | adherence (Δ pts) | skipped passes "
        "| attention density | peak mem MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        spread = f"{_fmt(r['speedup'])}x ({_fmt(r['speedup_p25'])}–{_fmt(r['speedup_p75'])})"
        adherence = "—" if r["adherence"] is None else f"{r['adherence']:.0%}"
        if r["adherence_delta_points"] is not None and r["accel"] != "none":
            adherence += f" ({r['adherence_delta_points']:+.1f})"
        memory = "—" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
        lpips = _fmt(r["lpips"], ".3f", none="n/a" if r["accel"] != "none" else "—")
        lines.append(
            f"| `{r['accel']}` | {spread} | {_fmt(r['seconds'])} | {_fmt(r['psnr'], '.1f')} | {_fmt(r['ssim'], '.3f')} "
            f"| {_fmt(r['temporal_error'], '.4f')} | {lpips} | {adherence} | {r['skipped_fraction']:.0%} "
            f"| {_fmt(r.get('attention_density'), '.2f')} | {memory} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, summary: list[dict], plan) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(plan), extrasaction="ignore")
    writer.writeheader()
    for row in summary:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_atomic(out_dir / "summary.csv", buffer.getvalue())
    write_atomic(out_dir / "summary.md", summary_markdown(summary, plan))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (higher is better on both axes), by speedup."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i][0])


def write_pareto(path: Path, summary: list[dict], title: str = "") -> bool:
    """Speedup against PSNR, one point per accelerated configuration; False if nothing to plot."""
    rows = [r for r in summary if r["accel"] != "none" and r["speedup"] is not None and r["psnr"] is not None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["speedup"], r["psnr"]) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        color="tab:red",
        lw=1.5,
        label="Pareto front",
        zorder=2,
    )
    for (x, y), r in zip(points, rows):
        label = r["accel"] if len(r["accel"]) <= 36 else r["accel"][:33] + "..."
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("speedup over baseline (median, end to end)")
    ax.set_ylabel(f"PSNR vs baseline, dB (identical = {PSNR_CAP:.0f})")
    ax.set_title(title or "genaccel bench")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    replace_atomic(tmp, path)
    return True


def write_report(out_dir: Path, rows: list[dict], plan, memory: dict | None = None) -> list[dict]:
    summary = summarize(rows, plan, memory)
    write_summary(out_dir, summary, plan)
    setting = "custom" if plan.custom_size else plan.request.setting
    write_pareto(
        out_dir / "pareto.png",
        summary,
        title=f"genaccel bench ({rows[0]['width']}x{rows[0]['height']}x"
        f"{rows[0]['num_frames']}, {rows[0]['num_inference_steps']} steps, setting {setting})"
        if rows
        else "",
    )
    return summary


# ----------------------------------------------------------------------------- compare video
def _label(width: int, text: str, height: int = 16) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(image)
    while text and draw.textlength(text) > width - 6:
        text = text[:-4] + "..." if len(text) > 4 else ""
    draw.text((3, 2), text, fill=(235, 235, 235))
    return np.asarray(image)


def compare_frames(
    prompt: str, clips: list[tuple[str, np.ndarray]], amplify: float = 4.0, min_side: int = 192
) -> np.ndarray:
    """(F, H', W', 3) uint8 frames: one row per accelerated clip, baseline | accelerated | |difference| x amplify.

    `clips[0]` is the baseline. Small frames are enlarged (nearest neighbour) so labels fit.
    """
    from genaccel.io.video import to_uint8

    base_name, base = clips[0]
    frames, h, w = base.shape[:3]
    scale = max(1, math.ceil(min_side / min(h, w)))
    big = lambda clip: np.repeat(np.repeat(to_uint8(clip), scale, axis=1), scale, axis=2)  # noqa: E731
    rows = []
    for name, clip in clips[1:]:
        diff = np.clip(np.abs(clip.astype(np.float32) - base.astype(np.float32)) * amplify, 0, 1)
        tiles = [(base_name, big(base)), (name, big(clip)), (f"|difference| x{amplify:g}", big(diff))]
        header = np.concatenate([_label(w * scale, t) for t, _ in tiles], axis=1)
        body = np.concatenate([v for _, v in tiles], axis=2)
        rows.append(np.concatenate([np.broadcast_to(header, (frames, *header.shape)), body], axis=1))
    title = _label(rows[0].shape[2], prompt)
    return np.concatenate([np.broadcast_to(title, (frames, *title.shape)), *rows], axis=1)


def write_compare_video(path: Path, prompt: str, clips: list[tuple[str, np.ndarray]], fps: int = 8) -> Path | None:
    """Write the side-by-side comparison (baseline first in `clips`); None if there is nothing to compare."""
    from genaccel.io.video import write_video

    if len(clips) < 2:
        return None
    return write_video(compare_frames(prompt, clips).astype(np.float32) / 255.0, path, fps=fps)
