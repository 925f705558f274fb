"""The `genaccel` command line: a thin layer over the Python API.

Every user error becomes one line on stderr and exit status 2, with no traceback and no partial
output file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXAMPLE_PROMPT = "a red circle moving left on a black background"
EXIT_USER_ERROR = 2


# ----------------------------------------------------------------------------- arguments
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="built-in name (see `genaccel list`), local diffusers folder, or hub id "
                   "(default: the embedded model, `tiny`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument("--accel", default="none", metavar="SPEC|PRESET",
                   help="accelerators: 'none', a preset (quality, balanced, fast), a spec such as "
                        "'teacache(threshold=0.1)+pab(spatial=2)', or a .toml/.json spec file (default: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--setting", default="default", help="named defaults of the model: default, or long (the embedded "
                   "model's benchmark setting: more frames and larger frames); --steps/--frames/--height/--width override it")
    p.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--frames", type=_positive_int, default=None, help="frame count (default: the model's; Wan needs 4k+1)")
    p.add_argument("--height", type=_positive_int, default=None, help="frame height in pixels (default: the model's)")
    p.add_argument("--width", type=_positive_int, default=None, help="frame width in pixels (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    p.add_argument("--fps", type=_positive_int, default=8, help="frames per second of written videos (default: 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the run's figures as the last line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genaccel",
        description="Training-free acceleration of diffusers text-to-video pipelines.",
        epilog=f'example: genaccel generate "{EXAMPLE_PROMPT}" --accel balanced --out clip.mp4',
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser("generate", help="generate one video from a prompt",
                       description="Generate one video from a text prompt. The suffix of --out picks the "
                                   "format: .mp4, .gif, .webp, or no suffix for a folder of PNG frames.")
    g.add_argument("prompt", help="the text prompt")
    g.add_argument("--out", default="clip.mp4", help="output path (default: %(default)s)")
    _add_generation_options(g)

    b = sub.add_parser("batch", help="generate one video per prompt of a file",
                       description="Generate a video for each prompt of FILE (.txt: one prompt per line; .jsonl: "
                                   "objects with 'prompt' and optional per-item options: negative, seed, steps, frames, "
                                   "height, width, guidance, accel, name). Writes DIR/manifest.jsonl; a re-run skips "
                                   "items already finished.")
    b.add_argument("file", help="prompts file (.txt or .jsonl)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--format", default="mp4", choices=["mp4", "gif", "webp", "png"], help="video format (default: mp4)")
    _add_generation_options(b)

    ls = sub.add_parser("list", help="models, families, accelerators, presets and compatibility")
    ls.add_argument("--json", action="store_true", help="print everything as one JSON object")

    sc = sub.add_parser("score", help="judge a video of the shapes grammar against its prompt (JSON verdict)",
                        description="Read a video's shape colour, kind and motion from its frames alone and compare "
                                    "them with a prompt of the grammar 'a {color} {shape} moving {direction} on a "
                                    "{background} background' (or 'standing still'). Prints one JSON object.")
    sc.add_argument("video", help="video file (.mp4, .gif, .webp) or folder of PNG frames")
    sc.add_argument("--prompt", required=True, help="the prompt the video was made from")

    c = sub.add_parser("calibrate", help="fit TeaCache coefficients and MagCache ratios for a model",
                       description="Run plain generations on a few prompts, fit this model's TeaCache rescale "
                                   "polynomial and MagCache magnitude ratios, and write them to a profile file that "
                                   "`teacache` (coefficients=auto) and `magcache` use for this model.")
    _add_model_options(c)
    c.add_argument("--prompt", action="append", default=None, help="a calibration prompt (repeatable)")
    c.add_argument("--prompts", default=None, metavar="FILE", help="file of calibration prompts, one per line")
    c.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    c.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the model's)")
    c.add_argument("--frames", type=_positive_int, default=None)
    c.add_argument("--height", type=_positive_int, default=None)
    c.add_argument("--width", type=_positive_int, default=None)
    c.add_argument("--out", default=None, help="profile path (default: the user profile folder, keyed by model)")
    c.add_argument("--json", action="store_true", help="print the profile as JSON on the last line")

    bn = sub.add_parser("bench", help="measure speedup against quality, side by side with the baseline",
                        description="Run the baseline (none) and every --accel configuration on the same prompts and "
                                    "seeds in one process, after a warm-up, interleaved so machine noise hits all alike. "
                                    "Writes DIR/results.jsonl (every run), summary.csv and summary.md (one row per "
                                    "configuration), pareto.png (speedup against PSNR) and compare.mp4 (baseline | "
                                    "accelerated | amplified difference, first prompt). Re-running with the same DIR "
                                    "resumes.",
                        epilog="example: genaccel bench --accel teacache --accel balanced --accel fast "
                               "--prompts benchmarks/eval_prompts.txt --out bench-out")
    _add_model_options(bn)
    bn.add_argument("--accel", action="append", default=[], metavar="SPEC|PRESET",
                    help="a configuration to measure (repeatable); the baseline 'none' is always included")
    bn.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    bn.add_argument("--prompts", default=None, metavar="FILE", help="file of prompts, one per line")
    bn.add_argument("--seeds", default="0", help="comma-separated seeds, each prompt runs with each (default: 0)")
    bn.add_argument("--setting", default="default", help="named defaults of the model: default or long")
    bn.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the setting's)")
    bn.add_argument("--frames", type=_positive_int, default=None, help="frame count (default: the setting's)")
    bn.add_argument("--height", type=_positive_int, default=None, help="frame height (default: the setting's)")
    bn.add_argument("--width", type=_positive_int, default=None, help="frame width (default: the setting's)")
    bn.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the setting's)")
    bn.add_argument("--repeat", type=_positive_int, default=1, help="timing repetitions per run; medians are reported (default: 1)")
    bn.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations before the sweep (default: 1)")
    bn.add_argument("--out", required=True, metavar="DIR", help="output folder (re-using it resumes the sweep)")
    bn.add_argument("--json", action="store_true", help="print the summary rows as JSON on the last line")

    u = sub.add_parser("ui", help="start the web UI in your browser (Gradio)",
                       description="Start the web UI: Generate, Compare (against the baseline) and Batch tabs. It "
                                   "listens on this machine only unless --host says otherwise; one generation runs at a "
                                   "time, other visitors see their place in the queue.")
    _add_model_options(u)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only; "
                   "0.0.0.0 opens it to your network)")
    u.add_argument("--port", type=_positive_int, default=7860, help="port (default: %(default)s)")
    u.add_argument("--outputs", default=None, metavar="DIR", help="folder for the videos it writes (default: a new temporary folder)")
    u.add_argument("--share", action="store_true", help="also open a public Gradio share link (off unless asked)")
    return parser


# ----------------------------------------------------------------------------- commands
def _request(args, prompt: str, overrides: dict | None = None):
    from genaccel.generate import GenerationRequest

    o = overrides or {}
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=o.get("negative", args.negative),
        num_frames=o.get("frames", args.frames),
        height=o.get("height", args.height),
        width=o.get("width", args.width),
        num_inference_steps=o.get("steps", args.steps),
        guidance_scale=o.get("guidance", args.guidance),
        seed=int(o.get("seed", args.seed)),
        setting=str(o.get("setting", args.setting)),
    )


def _load(args):
    from genaccel.models import default_model, load_pipeline

    args.model = args.model or default_model()
    return load_pipeline(args.model, device=args.device)


def cmd_generate(args) -> int:
    from genaccel.acceleration import apply
    from genaccel.generate import complete_request, generate
    from genaccel.spec import check_spec
    from genaccel.video_io import check_output_path, write_video

    if not args.prompt.strip():
        raise _user_error("the prompt is empty")
    out = check_output_path(args.out)
    check_spec(args.accel)
    pipe = _load(args)
    request = complete_request(pipe, _request(args, args.prompt))
    apply(pipe, args.accel)
    result = generate(pipe, request, progress=not args.json)
    write_video(result.frames, out, fps=args.fps)
    summary = {"out": str(out), "model": args.model, **result.summary()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out} ({summary['frames']} frames, {summary['height']}x{summary['width']}) in "
              f"{summary['seconds']:.2f} s; transformer passes {summary['transformer_calls']}, "
              f"skipped {summary['skipped_calls']}")
    return 0


def cmd_batch(args) -> int:
    from genaccel.batch import read_items, run_batch

    from genaccel.spec import check_spec

    items = read_items(Path(args.file))
    for spec in {args.accel, *(str(i.options["accel"]) for i in items if "accel" in i.options)}:
        check_spec(spec)
    pipe = _load(args)
    summary = run_batch(pipe, items, Path(args.out), make_request=lambda item: _request(args, item.prompt, item.options),
                        accel=args.accel, fmt=args.format, fps=args.fps, progress=not args.json)
    summary["model"] = args.model
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['done']} videos written, {summary['skipped']} already done; manifest: {summary['manifest']}")
    return 0


def cmd_list(args) -> int:
    from genaccel.catalog import catalog, format_catalog

    data = catalog()
    print(json.dumps(data) if args.json else format_catalog(data))
    return 0


def _read_prompts(args) -> list[str]:
    """Prompts from repeated --prompt and a --prompts file (one per line, blank lines skipped)."""
    prompts = list(args.prompt or [])
    if args.prompts:
        try:
            prompts += [l.strip() for l in Path(args.prompts).read_text().splitlines() if l.strip()]
        except OSError as exc:
            raise _user_error(f"cannot read {args.prompts}: {exc.strerror}") from None
    return prompts


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise _user_error(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds or min(seeds) < 0:
        raise _user_error(f"--seeds must be non-negative integers, got '{text}'")
    return seeds


def cmd_calibrate(args) -> int:
    from tqdm import tqdm

    from genaccel.calibrate import calibrate, write_profile

    prompts = _read_prompts(args) or [
        EXAMPLE_PROMPT, "a blue square moving up on a gray background", "a yellow triangle standing still on a black background"]
    seeds = _parse_seeds(args.seeds)
    pipe = _load(args)
    settings = {"num_inference_steps": args.steps, "num_frames": args.frames, "height": args.height, "width": args.width}
    with tqdm(total=len(prompts) * len(seeds), desc="calibrating", disable=args.json) as bar:
        profile = calibrate(pipe, prompts, seeds=seeds, progress=lambda i, n: bar.update(1), **settings)
    path = write_profile(profile, args.out, pipe)
    if args.json:
        print(json.dumps({"out": str(path), **profile}))
    else:
        print(f"wrote profile {path}: teacache coefficients {['%.4g' % c for c in profile['teacache']['coefficients']]}")
    return 0


def cmd_score(args) -> int:
    from genaccel.score import score_frames
    from genaccel.shapes import parse_prompt
    from genaccel.video_io import read_video

    try:
        expected = parse_prompt(args.prompt)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    path = Path(args.video)
    if not path.exists():
        raise _user_error(f"no such video: {path}")
    try:
        frames = read_video(path)
    except Exception as exc:  # imageio/PIL raise many types for unreadable files
        raise _user_error(f"cannot read video {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    print(json.dumps({"video": str(path), **score_frames(frames, expected).to_dict()}))
    return 0


def cmd_bench(args) -> int:
    from genaccel.bench import BenchPlan, run_bench
    from genaccel.bench.report import summary_markdown, summarize
    from genaccel.spec import check_spec

    prompts = _read_prompts(args)
    if not prompts:
        raise _user_error("bench needs prompts: --prompt TEXT (repeatable) or --prompts FILE")
    for spec in args.accel:
        check_spec(spec)
    plan = BenchPlan(accels=args.accel, prompts=prompts, seeds=_parse_seeds(args.seeds), setting=args.setting,
                     num_inference_steps=args.steps, num_frames=args.frames, height=args.height, width=args.width,
                     guidance_scale=args.guidance, repeat=args.repeat, warmup=args.warmup)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _user_error(f"--out {out} is a file; bench writes a folder")
    pipe = _load(args)
    rows = run_bench(pipe, plan, out, progress=not args.json)
    summary = summarize(rows, plan.accels)
    if args.json:
        print(json.dumps({"out": str(out), "model": args.model, "summary": summary}))
    else:
        print(summary_markdown(summary, plan), end="")
        print(f"wrote {out}/results.jsonl, summary.csv, summary.md, pareto.png, compare.mp4")
    return 0


def cmd_ui(args) -> int:
    from genaccel.ui.app import launch

    launch(host=args.host, port=args.port, model=args.model, device=args.device, output_dir=args.outputs, share=args.share)
    return 0


COMMANDS = {"generate": cmd_generate, "score": cmd_score, "batch": cmd_batch, "list": cmd_list, "calibrate": cmd_calibrate, "bench": cmd_bench, "ui": cmd_ui}


def _user_error(message: str):
    from genaccel.errors import InputError

    return InputError(message)


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(format="genaccel: %(message)s", level=logging.INFO if verbose else logging.WARNING)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from diffusers.utils import logging as dlogging

        dlogging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    from genaccel.errors import GenAccelError

    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except GenAccelError as exc:
        print(f"genaccel: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("genaccel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
