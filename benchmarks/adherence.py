"""Prompt adherence of a model on the fixed evaluation set, judged by genaccel's scorer.

    python benchmarks/adherence.py --setting default --out benchmarks/results/adherence-default.json
    python benchmarks/adherence.py --setting long --out benchmarks/results/adherence-long.json

Each prompt of benchmarks/eval_prompts.txt (48 prompts covering every colour, shape, motion and
background) is generated once with seed = its line number, scored from its frames alone, and timed.
Prints a Markdown table (for BENCHMARKS.md) and writes every verdict and timing as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the embedded model)")
    parser.add_argument("--setting", default="default", help="default or long")
    parser.add_argument("--accel", default="none", help="accelerator spec or preset (default: none)")
    parser.add_argument("--prompts", default=str(HERE / "eval_prompts.txt"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--out", default=None, help="JSON file for all verdicts and timings")
    args = parser.parse_args()

    import genaccel
    from genaccel.models.facts import default_model
    from genaccel.pipelines.score import accuracy, score_frames

    prompts = [p.strip() for p in Path(args.prompts).read_text().splitlines() if p.strip()][: args.limit]
    model = args.model or default_model()
    pipe = genaccel.load_pipeline(model)
    genaccel.apply(pipe, args.accel)
    genaccel.generate(pipe, prompts[0], seed=0, setting=args.setting)  # warm-up
    rows, verdicts = [], []
    for seed, prompt in enumerate(tqdm(prompts, desc=f"adherence ({args.setting})", unit="video")):
        result = genaccel.generate(pipe, prompt, seed=seed, setting=args.setting)
        verdict = score_frames(result.frames, prompt)
        verdicts.append(verdict)
        rows.append({**result.summary(), **verdict.to_dict()})
    acc = accuracy(verdicts)
    seconds = [r["seconds"] for r in rows]
    decode_share = statistics.median(r["decode_seconds"] / r["seconds"] for r in rows)
    summary = {
        "model": model,
        "setting": args.setting,
        "accel": args.accel,
        "videos": len(rows),
        "num_frames": rows[0]["num_frames"],
        "height": rows[0]["height"],
        "width": rows[0]["width"],
        "num_inference_steps": rows[0]["num_inference_steps"],
        "accuracy": acc,
        "median_seconds": statistics.median(seconds),
        "median_decode_share": decode_share,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    print("| setting | size | videos | colour | shape | direction | all three | s/video (median) | decode share |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.setting} | {summary['width']}x{summary['height']}x{summary['num_frames']}, {summary['num_inference_steps']} steps "
        f"| {len(rows)} | {acc['color']:.0%} | {acc['shape']:.0%} | {acc['direction']:.0%} | {acc['all']:.0%} "
        f"| {summary['median_seconds']:.2f} | {decode_share:.0%} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
