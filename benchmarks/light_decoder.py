"""The light decoder on the embedded models, what the bench does not measure: live previews' cost and streams.

    python benchmarks/light_decoder.py --out benchmarks/results/decoder-extra.json   # about 8 minutes on 2 cores

1. Previews: `generate` with previews every 5 steps against the same generation without, interleaved per
   prompt (one order, then the other, so drift falls on both), at both settings, on held-out prompts; the cost is the ratio of the
   summed seconds, and the previews' own decode time (`preview_seconds`) is reported beside it.
2. Streams: the embedded causal model streamed with the full VAE and with the light decoder, in turns
   (full, light, light, full), `--chunks` chunks each; frames per second of chunks 3 on (the first chunks
   warm up), whole-chunk time (denoising + decoding), and the decode's share.
The decode's speed, PSNR and adherence come from `genaccel bench` (benchmarks/sweep_decoder.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def previews(pipe, prompts: list[str], setting: str) -> dict:
    import genaccel

    runs = {"off": [], "on": []}
    shown = []
    for index, prompt in enumerate(prompts):
        order = ("off", "on", "on", "off") if index % 2 == 0 else ("on", "off", "off", "on")
        for mode in order[:2]:  # one of each per prompt, the order alternating
            options = {"seed": index, "setting": setting}
            if mode == "on":
                result = genaccel.generate(pipe, prompt, preview=shown.append, preview_every=5, **options)
            else:
                result = genaccel.generate(pipe, prompt, **options)
            runs[mode].append(result)
    off = sum(r.seconds for r in runs["off"])
    on = sum(r.seconds for r in runs["on"])
    return {
        "setting": setting,
        "prompts": len(prompts),
        "seconds_without": round(off, 3),
        "seconds_with": round(on, 3),
        "cost_percent": round(100 * (on - off) / off, 2),
        "preview_seconds": round(sum(r.stats["preview_seconds"] for r in runs["on"]), 4),
        "preview_percent": round(100 * sum(r.stats["preview_seconds"] for r in runs["on"]) / on, 2),
        "previews_per_video": runs["on"][0].stats["previews"],
    }


def streams(chunks: int) -> dict:
    import genaccel

    pipe = genaccel.load_pipeline("tiny-causal", device="cpu")
    prompt = "a green square moving right on a black background"
    found = {"full": [], "light": []}
    for decoder in ("full", "light", "light", "full"):
        for chunk in genaccel.stream(pipe, prompt, chunks=chunks, seed=3, decoder=decoder):
            if chunk.index >= 2:
                found[decoder].append(chunk)
    out = {}
    for decoder, rows in found.items():
        frames = sum(len(c.frames) for c in rows)
        seconds = sum(c.seconds for c in rows)
        out[decoder] = {
            "chunks": len(rows),
            "fps": round(frames / seconds, 2),
            "chunk_seconds_median": round(statistics.median(c.seconds for c in rows), 4),
            "decode_seconds_median": round(statistics.median(c.decode_seconds for c in rows), 4),
            "decode_share_percent": round(100 * sum(c.decode_seconds for c in rows) / seconds, 1),
        }
    out["fps_ratio"] = round(out["light"]["fps"] / out["full"]["fps"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", type=int, default=6, help="held-out prompts for previews at the default setting")
    parser.add_argument("--long-prompts", type=int, default=2, help="held-out prompts at the long setting")
    parser.add_argument("--chunks", type=int, default=12, help="chunks per stream")
    args = parser.parse_args()
    import genaccel

    held_out = [line.strip() for line in (HERE / "holdout_prompts.txt").read_text().splitlines() if line.strip()]
    pipe = genaccel.load_pipeline("tiny", device="cpu")
    genaccel.generate(pipe, held_out[0])  # warm-up
    report = {
        "command": "python benchmarks/light_decoder.py " + " ".join(sys.argv[1:]),
        "previews": [
            previews(pipe, held_out[: args.prompts], "default"),
            previews(pipe, held_out[: args.long_prompts], "long"),
        ],
        "stream": streams(args.chunks),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| setting | prompts | without previews (s) | with previews every 5 steps (s) | cost | previews' decode |")
    print("|---|---|---|---|---|---|")
    for row in report["previews"]:
        print(
            f"| {row['setting']} | {row['prompts']} | {row['seconds_without']} | {row['seconds_with']} | "
            f"{row['cost_percent']:+.1f}% | {row['preview_seconds']} s ({row['preview_percent']}%) |"
        )
    print("\n| stream decoder | frames/s | median chunk (s) | median decode (s) | decode share |")
    print("|---|---|---|---|---|")
    for decoder in ("full", "light"):
        row = report["stream"][decoder]
        print(
            f"| {decoder} | {row['fps']} | {row['chunk_seconds_median']} | {row['decode_seconds_median']} | "
            f"{row['decode_share_percent']}% |"
        )
    print(f"\nstream frames per second, light / full: {report['stream']['fps_ratio']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
