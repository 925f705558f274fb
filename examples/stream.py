"""Stream a video from the embedded causal model, writing it as it comes and switching the prompt midway.

    python examples/stream.py --chunks 30 --out stream.mp4

Each chunk is 4 video frames (the first one 1); the printed latency per chunk stays flat because the KV
cache keeps only a sink and a window of earlier frames.
"""

from __future__ import annotations

import argparse

import genaccel
from genaccel.io.video import StreamWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-causal")
    parser.add_argument("--chunks", type=int, default=30)
    parser.add_argument("--out", default="stream.mp4")
    args = parser.parse_args()

    pipe = genaccel.load_pipeline(args.model)
    switch = {args.chunks // 2: "a blue square moving up on a gray background"}
    with (
        StreamWriter(args.out, fps=8) as writer,
        genaccel.stream(
            pipe, "a red circle moving left on a black background", chunks=args.chunks, prompts_at=switch
        ) as chunks,
    ):
        for chunk in chunks:
            writer.write(chunk.frames)  # on disk, playable, before the next chunk starts
            print(
                f"chunk {chunk.index:3d}: {len(chunk.frames)} frames in {chunk.seconds:.3f} s, "
                f"cache holds latent frames {chunk.cached_frames}{'  <- new prompt' if chunk.recached else ''}"
            )
    print(f"wrote {args.out} ({writer.frames} frames)")


if __name__ == "__main__":
    main()
