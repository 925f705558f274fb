"""Streaming on the CPU with the embedded causal model: flat cost per chunk, frames per second, adherence.

    python benchmarks/stream_cpu.py --out benchmarks/results/stream-cpu.json     # about 10 minutes on 2 cores

1. Flat cost, measured so that the machine's own drift cancels: this CPU slows down under sustained load
   (a fresh stream right after a long one is slower than the long one's late chunks), so comparing chunk 5
   at minute 0 with chunk 200 at minute 2 would measure the machine. Three streams of the same prompt and
   seed, each on its own copy of the model, advance one chunk each per round: the first from round 1, the
   second from round 151, the third from round 196; in rounds 198-202 they are at chunks 198-202, 48-52 and
   3-7, and the medians there compare chunk 200, 50 and 5 under the same conditions. Stream state (KV
   cache, kept latents, VAE cache) per stream at those chunks, and the process's resident memory over one
   200-chunk stream (the model's defaults: window 4, sink 1, 8 steps, CFG 6).
2. Frames per second of that single stream, with and without VAE decoding.
3. Adherence (genaccel's shapes scorer) of streamed clips per window of 16 frames (frames 1-16, 17-32,
   33-48 of a 13-chunk stream) against whole-clip generation of 17 frames by the bidirectional embedded
   model (its default 30 steps), on the first --prompts prompts of eval_prompts.txt, seed = line number;
   and across a prompt switch at chunk 5 (to the next prompt of the list), the window of chunks 7-10
   (frames 25-40) scored against the new prompt.
4. Stacking: `teacache` (which computes every commit pass in full) with the cache, against the cache alone,
   on the same prompts, the two interleaved per prompt: seconds of a 5-chunk stream, passes skipped, and the
   adherence of its frames 1-16.
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
WINDOWS = ((1, 17), (17, 33), (33, 49))
AFTER_SWITCH = (25, 41)


def flat_cost(pipe, chunks: int) -> dict:
    from genaccel.generation.stream import stream

    rows = []
    for chunk in tqdm(
        stream(pipe, "a red circle moving left on a black background", chunks=chunks, seed=0),
        total=chunks,
        desc="flat-cost stream",
        unit="chunk",
    ):
        rows.append(
            {
                "chunk": chunk.index + 1,
                "frames": len(chunk.frames),
                "seconds": chunk.seconds,
                "decode_seconds": chunk.decode_seconds,
                "state_bytes": chunk.memory_bytes,
                "rss_bytes": chunk.rss_bytes,
            }
        )
    at = {}
    for n in sorted({n for n in (5, 50, chunks) if n <= chunks}):
        around = [r["seconds"] for r in rows[n - 5 : n]]
        at[n] = {
            "seconds": round(rows[n - 1]["seconds"], 4),
            "median5_seconds": round(statistics.median(around), 4),
            "state_bytes": rows[n - 1]["state_bytes"],
            "rss_bytes": rows[n - 1]["rss_bytes"],
        }
    steady = rows[2:]
    frames = sum(r["frames"] for r in steady)
    seconds = sum(r["seconds"] for r in steady)
    return {
        "chunks": rows,
        "at": at,
        "fps": round(frames / seconds, 2),
        "fps_without_decode": round(frames / sum(r["seconds"] - r["decode_seconds"] for r in steady), 2),
    }


def flat_cost_interleaved(pipes, rounds: int = 202, starts=(0, 150, 195), window=(198, 202)) -> dict:
    """Chunk seconds of three streams advanced in lockstep from staggered starts (see the module doc)."""
    from genaccel.generation.stream import stream

    iters = [None] * len(starts)
    rows: list[list[dict]] = [[] for _ in starts]
    for r in tqdm(range(rounds), desc="interleaved streams", unit="round"):
        for i, start in enumerate(starts):
            if r == start:
                iters[i] = stream(pipes[i], "a red circle moving left on a black background", seed=0)
            if r >= start:
                chunk = next(iters[i])
                rows[i].append(
                    {
                        "round": r + 1,
                        "chunk": chunk.index + 1,
                        "seconds": chunk.seconds,
                        "state_bytes": chunk.memory_bytes,
                    }
                )
    for it in iters:
        it.close()
    at = {}
    for i, _start in enumerate(starts):
        inside = [x for x in rows[i] if window[0] <= x["round"] <= window[1]]
        middle = inside[len(inside) // 2]
        at[middle["chunk"]] = {
            "median_seconds": round(statistics.median(x["seconds"] for x in inside), 4),
            "chunks": f"{inside[0]['chunk']}-{inside[-1]['chunk']}",
            "state_bytes": middle["state_bytes"],
        }
    return {"at": dict(sorted(at.items())), "rows": rows}


def adherence(whole_pipe, causal_pipe, prompts: list[str]) -> dict:
    import genaccel
    from genaccel.generation.stream import stream
    from genaccel.pipelines.score import accuracy, score_frames

    whole, windows, switched = [], [[] for _ in WINDOWS], []
    for i, prompt in enumerate(tqdm(prompts, desc="adherence", unit="prompt")):
        seed = i + 1
        whole.append(score_frames(genaccel.generate(whole_pipe, prompt, seed=seed).frames, prompt))
        frames = np.concatenate([c.frames for c in stream(causal_pipe, prompt, chunks=13, seed=seed)])
        for w, (a, b) in enumerate(WINDOWS):
            windows[w].append(score_frames(frames[a:b], prompt))
        other = prompts[(i + 1) % len(prompts)]
        frames = np.concatenate(
            [c.frames for c in stream(causal_pipe, prompt, chunks=11, seed=seed, prompts_at={5: other})]
        )
        switched.append(score_frames(frames[AFTER_SWITCH[0] : AFTER_SWITCH[1]], other))
    return {
        "whole_clip": accuracy(whole),
        "stream_windows": {f"frames {a}-{b - 1}": accuracy(v) for (a, b), v in zip(WINDOWS, windows)},
        "after_switch": accuracy(switched),
        "prompts": len(prompts),
    }


STACKS = ("none", "teacache(threshold=0.2,coefficients=identity)")


def stacking(pipe, prompts: list[str]) -> dict:
    from genaccel.generation.stream import stream
    from genaccel.pipelines.score import accuracy, score_frames

    rows = {spec: {"seconds": 0.0, "verdicts": [], "skipped": 0, "passes": 0} for spec in STACKS}
    for i, prompt in enumerate(tqdm(prompts, desc="stacking", unit="prompt")):
        for spec in STACKS:
            chunks = list(stream(pipe, prompt, chunks=5, seed=i + 1, accel=spec))
            row = rows[spec]
            row["seconds"] += sum(c.seconds for c in chunks)
            row["verdicts"].append(score_frames(np.concatenate([c.frames for c in chunks])[1:17], prompt))
            stats = pipe._genaccel.stats()
            row["skipped"] += stats["skipped_calls"]
            row["passes"] += stats["transformer_calls"]
    base = rows["none"]["seconds"]
    return {
        spec: {
            "seconds": round(r["seconds"], 2),
            "speedup": round(base / r["seconds"], 3),
            "skipped_share": round(r["skipped"] / max(r["passes"], 1), 3),
            "adherence": accuracy(r["verdicts"]),
        }
        for spec, r in rows.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument(
        "--parts",
        default="flat,interleaved,adherence,stacking",
        help="what to measure (comma-separated); with --out, other parts already there are kept",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import genaccel

    parts = set(args.parts.split(","))
    result = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).is_file() else {}
    causal = genaccel.load_pipeline("tiny-causal")
    if "flat" in parts:
        result["flat"] = flat_cost(causal, args.chunks)
    if "interleaved" in parts:
        pipes = [causal, genaccel.load_pipeline("tiny-causal"), genaccel.load_pipeline("tiny-causal")]
        result["interleaved"] = flat_cost_interleaved(pipes)
    if "adherence" in parts:
        prompts = [p.strip() for p in (HERE / "eval_prompts.txt").read_text().splitlines() if p.strip()]
        result["adherence"] = adherence(genaccel.load_pipeline("tiny"), causal, prompts[: args.prompts])
    if "stacking" in parts:
        prompts = [p.strip() for p in (HERE / "eval_prompts.txt").read_text().splitlines() if p.strip()]
        result["stacking"] = stacking(causal, prompts[: args.prompts])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    flat = result["flat"]
    print("\n| chunk | seconds (median, same rounds) | stream state MB |\n|---|---|---|")
    for n, r in result.get("interleaved", {}).get("at", {}).items():
        print(f"| {n} ({r['chunks']}) | {r['median_seconds']:.3f} | {r['state_bytes'] / 1e6:.2f} |")
    print("\n| chunk of one stream | seconds | median of 5 | stream state MB | resident MB |\n|---|---|---|---|---|")
    for n, r in flat["at"].items():
        print(
            f"| {n} | {r['seconds']:.3f} | {r['median5_seconds']:.3f} | {r['state_bytes'] / 1e6:.2f} | "
            f"{r['rss_bytes'] / 1e6:.0f} |"
        )
    print(f"\nframes per second: {flat['fps']} ({flat['fps_without_decode']} without VAE decoding)\n")
    print("| clip | colour | shape | direction | all three |\n|---|---|---|---|---|")
    a = result["adherence"]
    rows = [("whole clip, bidirectional model (17 frames)", a["whole_clip"])]
    rows += [(f"stream, {k}", v) for k, v in a["stream_windows"].items()]
    rows.append((f"stream after a prompt switch, frames {AFTER_SWITCH[0]}-{AFTER_SWITCH[1] - 1}", a["after_switch"]))
    for name, acc in rows:
        print(f"| {name} | {acc['color']:.0%} | {acc['shape']:.0%} | {acc['direction']:.0%} | {acc['all']:.0%} |")
    if "stacking" in result:
        print("\n| accel (with kvcache) | speedup | passes skipped | frames 1-16: colour | shape | direction | all |")
        print("|---|---|---|---|---|---|---|")
        for spec, r in result["stacking"].items():
            a = r["adherence"]
            print(
                f"| `{spec}` | {r['speedup']:.2f}x | {r['skipped_share']:.0%} | {a['color']:.0%} | {a['shape']:.0%} | "
                f"{a['direction']:.0%} | {a['all']:.0%} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
