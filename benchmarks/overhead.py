"""What `none` through genaccel costs over calling the diffusers pipeline directly.

    python benchmarks/overhead.py --rounds 12 --out benchmarks/results/overhead-default.json

Alternates, in one process after a warm-up, a direct `pipe(**kwargs)` call on the bare pipeline
and `genaccel.generate(pipe, request)` with `none` applied (hooks, step tracker, decode timing,
request checks included), with the same prompt, seed and settings; the order flips every round.
Both are timed around the whole call. Reports the median of the per-round time ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the embedded model)")
    parser.add_argument("--setting", default="default")
    parser.add_argument("--prompt", default="a red circle moving left on a black background")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", default=None, help="JSON file for the raw timings")
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    import genaccel
    from genaccel.generation.prepare import prepare
    from genaccel.generation.request import GenerationRequest
    from genaccel.models.facts import default_model

    model = args.model or default_model()
    pipe = genaccel.load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    request = prepare(pipe, GenerationRequest(prompt=args.prompt, setting=args.setting, accel="none"))

    def direct() -> float:
        genaccel.remove(pipe)
        kwargs = dict(request.call, generator=torch.Generator("cpu").manual_seed(request.request.seed))
        start = time.perf_counter()
        pipe(**kwargs)
        return time.perf_counter() - start

    def through_genaccel() -> float:
        genaccel.apply(pipe, "none")  # hooks go on outside the timed call, as a user's apply() would
        start = time.perf_counter()
        genaccel.generate(pipe, request)
        return time.perf_counter() - start

    direct(), through_genaccel()  # warm-up
    rows = []
    for k in tqdm(range(args.rounds), desc="overhead", unit="round"):
        pair = (direct, through_genaccel) if k % 2 == 0 else (through_genaccel, direct)
        times = {fn.__name__: fn() for fn in pair}
        rows.append({**times, "ratio": times["through_genaccel"] / times["direct"]})
    ratio = statistics.median(r["ratio"] for r in rows)
    summary = {
        "model": model,
        "setting": args.setting,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "median_direct_s": statistics.median(r["direct"] for r in rows),
        "median_genaccel_s": statistics.median(r["through_genaccel"] for r in rows),
        "median_ratio": ratio,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "rounds": rows}, indent=1))
    print(
        "| model | setting | rounds | direct diffusers s (median) | genaccel `none` s (median) | overhead (median of ratios) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {model} | {args.setting} | {args.rounds} | {summary['median_direct_s']:.3f} | "
        f"{summary['median_genaccel_s']:.3f} | {100 * (ratio - 1):+.2f}% |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
