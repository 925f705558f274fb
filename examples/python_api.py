"""Generate with and without accelerators from Python, and compare.

python examples/python_api.py [--model tiny-wan] [--accel balanced] [--out accelerated.mp4]
"""

import argparse

import genaccel
import genaccel.tools.bench.quality

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument(
    "--model", default=None, help="built-in name, local folder or hub id (default: the built-in default)"
)
parser.add_argument("--accel", default="balanced", help="spec or preset (default: balanced)")
parser.add_argument("--prompt", default="a red circle moving left on a black background")
parser.add_argument(
    "--out", default="accelerated.mp4", help="where to write the accelerated video (default: accelerated.mp4)"
)
args = parser.parse_args()

pipe = genaccel.load_pipeline(args.model)

baseline = genaccel.generate(pipe, args.prompt, seed=0)  # nothing applied: the plain pipeline
acceleration = genaccel.apply(pipe, args.accel)  # hooks on every denoiser
fast = genaccel.generate(pipe, args.prompt, seed=0)
print(acceleration, acceleration.stats())
genaccel.remove(pipe)  # back to the plain pipeline

psnr = genaccel.tools.bench.quality.psnr(baseline.frames, fast.frames)
print(
    f"baseline {baseline.seconds:.3f} s, {args.accel} {fast.seconds:.3f} s "
    f"({baseline.seconds / fast.seconds:.2f}x), PSNR {psnr:.1f} dB, "
    f"passes skipped {fast.stats['skipped_calls']}/{fast.stats['transformer_calls']}"
)
genaccel.write_video(fast.frames, args.out)
