"""Compare two `genaccel bench` runs of the same sweep: is a re-run within noise?

    python benchmarks/compare_runs.py RUN_A RUN_B [--out table.md]

Reads RUN_A/summary.csv and RUN_B/summary.csv and prints one markdown row per configuration
present in both: speedup (with the first run's 25th-75th percentile spread), PSNR and adherence of
each run and their differences. A speedup difference inside the spread of the per-prompt ratios is
noise; PSNR and adherence only change if the computation itself changed (same prompts, same seeds).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_summary(run: Path) -> dict[str, dict[str, str]]:
    path = run / "summary.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (is {run} a finished `genaccel bench` output?)")
    with path.open(newline="") as f:
        return {row["accel"]: row for row in csv.DictReader(f)}


def _num(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


def _psnr(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def compare(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> list[str]:
    """Markdown table rows comparing configurations found in both runs."""
    lines = [
        "| accel | speedup A (p25–p75) | speedup B | Δ speedup | PSNR A | PSNR B | adherence A | adherence B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for accel, row_a in a.items():
        row_b = b.get(accel)
        if row_b is None:
            continue
        sa, sb = _num(row_a["speedup"]), _num(row_b["speedup"])
        pa, pb = _num(row_a["psnr"]), _num(row_b["psnr"])
        aa, ab = _num(row_a["adherence"]), _num(row_b["adherence"])
        spread = f"{_num(row_a['speedup_p25']):.2f}–{_num(row_a['speedup_p75']):.2f}"
        lines.append(
            f"| `{accel}` | {sa:.2f}x ({spread}) | {sb:.2f}x | {100 * (sb - sa) / sa:+.1f}% "
            f"| {_psnr(pa)} | {_psnr(pb)} | {_percent(aa)} | {_percent(ab)} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="first bench output folder")
    parser.add_argument("run_b", type=Path, help="second bench output folder (the re-run)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    table = "\n".join(compare(read_summary(args.run_a), read_summary(args.run_b)))
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
