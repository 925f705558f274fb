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

from genaccel.generation.request import EXAMPLE_PROMPT, FIELDS, MEMORY_FIELDS
from genaccel.models.facts import DEFAULTED
from genaccel.tools.bench.runner import PER_RUN
from genaccel.tools.tune import DEFAULT_GROUPS

EXIT_USER_ERROR = 2
# Request fields each command takes as options (the prompt is an argument; see request.py).
GENERATE_OPTIONS = tuple(name for name in FIELDS if name != "prompt")
BENCH_OPTIONS = tuple(name for name in FIELDS if name not in PER_RUN)  # prompts, seeds and specs are lists
# A stream has no frame count (it runs by chunks) and no named setting (the model's stream size).
# Nor memory options yet: a stream's memory is flat and small (see BENCHMARKS.md).
STREAM_OPTIONS = tuple(name for name in GENERATE_OPTIONS if name not in ("num_frames", "setting", *MEMORY_FIELDS))
# at the model's guidance; with --schedule, the schedules are stored for the setting
CALIBRATE_OPTIONS = ("setting", *(name for name in DEFAULTED if name != "guidance_scale"))


# ----------------------------------------------------------------------------- arguments
def _positive_int(text: str, high: int = 2**31 - 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 < value <= high:
        raise argparse.ArgumentTypeError(f"must be between 1 and {high}, got {value}")
    return value


MAX_FPS = 240


def _fps(text: str) -> int:
    return _positive_int(text, MAX_FPS)


def _add_model_options(p: argparse.ArgumentParser, model_help: str | None = None) -> None:
    p.add_argument(
        "--model",
        default=None,
        help=model_help
        or "built-in name (see `genaccel list`), local diffusers "
        "folder, or hub id (default: the embedded model, `tiny`)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")


def _add_request_options(p: argparse.ArgumentParser, names: tuple[str, ...], **defaults) -> None:
    """One option per request field, named by its short alias; values are converted and checked by
    `request_from_options`, so every entry point reports a bad value the same way."""
    from genaccel.generation.request import field_kind, option_name

    for name in names:
        meta = FIELDS[name].metadata
        default = defaults.get(name, FIELDS[name].default)
        shown = "the model's" if default is None else repr(default) if isinstance(default, str) else default
        help_text = meta["help"] if "default:" in meta["help"] else f"{meta['help']} (default: {shown})"
        flag = f"--{option_name(name)}"
        if field_kind(name) is bool:
            p.add_argument(flag, dest=name, default=default, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        metavar = meta["metavar"] or option_name(name).upper()
        p.add_argument(flag, dest=name, default=default, metavar=metavar, help=help_text)


def _request_from_args(args, names: tuple[str, ...], prompt: str | None = None):
    """The request the options describe; without a prompt, the base that batch items and bench runs share."""
    from genaccel.generation.request import request_from_options

    options = {name: getattr(args, name) for name in names}
    return request_from_options({"prompt": prompt, **options}, option_prefix="--", partial=prompt is None)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=_fps, default=8, help="frames per second of written videos (default: 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the run's figures as the last line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genaccel",
        description="Training-free acceleration of diffusers text-to-video pipelines.",
        epilog=f'example: genaccel generate "{EXAMPLE_PROMPT}" --accel balanced --out clip.mp4',
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser(
        "generate",
        help="generate one video from a prompt",
        description="Generate one video from a text prompt. The suffix of --out picks the "
        "format: .mp4, .gif, .webp, or no suffix for a folder of PNG frames.",
    )
    g.add_argument("prompt", help="the text prompt")
    g.add_argument(
        "--out",
        default="clip.mp4",
        help="output path: .mp4, .gif, .webp, or a new folder for PNG frames (default: %(default)s)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run's estimated peak memory and whether it fits "
        "the device, then stop (loads the model, makes nothing)",
    )
    g.add_argument(
        "--context-parallel",
        default=None,
        metavar="ring=N|ulysses=N",
        help="split the video's sequence across N processes with diffusers' context parallelism (Wan, "
        "LTX-Video); start it with `accelerate launch --num_processes N -m genaccel generate ...`",
    )
    _add_model_options(g)
    _add_request_options(g, GENERATE_OPTIONS, accel="none")
    _add_output_options(g)
    g.add_argument(
        "--preview-every",
        type=_positive_int,
        default=None,
        metavar="K",
        help="every K denoising steps, decode the current estimate of the video with the light decoder "
        "(one frame per latent frame) and write it to --preview-dir",
    )
    g.add_argument(
        "--preview-dir",
        default=None,
        metavar="DIR",
        help="folder for the live previews, step_NNNN.png strips (default with --preview-every: previews/)",
    )

    st = sub.add_parser(
        "stream",
        help="stream an unbounded video from a causal model, chunk by chunk",
        description="Stream a video from a causal (block-causal) model: each chunk of latent frames "
        "attends a rolling KV cache of earlier ones, is decoded right away and appended "
        "to --out, which plays while it grows (it is kept under .NAME.part.mp4 and gets "
        "its name when the stream ends or is stopped with Ctrl-C). Without --chunks or "
        "--seconds it runs until stopped. Prints each chunk's latency.",
        epilog=f'example: genaccel stream "{EXAMPLE_PROMPT}" --chunks 40 '
        '--prompt-at "20:a blue square moving up on a gray background" --out stream.mp4',
    )
    st.add_argument("prompt", help="the text prompt (chunk 0 on)")
    st.add_argument(
        "--prompt-at",
        action="append",
        default=[],
        metavar="CHUNK:TEXT",
        help="switch to prompt TEXT from chunk CHUNK on (repeatable); the cached frames are re-computed "
        "under it so the scene changes smoothly",
    )
    length = st.add_mutually_exclusive_group()
    length.add_argument("--chunks", type=_positive_int, default=None, help="chunks to make (default: until stopped)")
    length.add_argument("--seconds", type=float, default=None, help="video length to make, in seconds at --fps")
    st.add_argument("--window", type=int, default=None, help="latent frames the KV cache keeps (default: the model's)")
    st.add_argument("--sink", type=int, default=None, help="first latent frames kept for good (default: the model's)")
    st.add_argument("--out", default="stream.mp4", help="output .mp4 (default: %(default)s)")
    _add_model_options(
        st,
        "a causal model: tiny-causal (default), or a folder whose genaccel.toml has a [stream] "
        "table (see genaccel convert-causal)",
    )
    _add_request_options(st, STREAM_OPTIONS, accel="none")
    st.add_argument("--fps", type=_fps, default=8, help="frames per second of the video (default: 8)")
    st.add_argument("--json", action="store_true", help="print one JSON object per chunk, then a summary object")

    cc = sub.add_parser(
        "convert-causal",
        help="turn a Self-Forcing / CausVid / LongLive checkpoint into a streaming model",
        description="Rename a causal Wan checkpoint's tensors (original Wan names, any wrapper prefix, "
        ".safetensors or a .pt read with torch's weights-only loader) to diffusers' "
        "WanTransformer3DModel, and write OUT/transformer plus OUT/genaccel.toml naming "
        "--base (your diffusers Wan2.1-T2V-1.3B folder) for the other components. "
        "Then: genaccel stream PROMPT --model OUT --device cuda.",
    )
    cc.add_argument("checkpoint", help="the causal model's checkpoint (.safetensors or .pt)")
    cc.add_argument("--base", required=True, help="diffusers Wan pipeline folder for the text encoder, VAE, tokenizer")
    cc.add_argument("--out", required=True, help="new folder to write")
    cc.add_argument("--chunk-frames", type=_positive_int, default=3, help="latent frames per chunk (default: 3)")
    cc.add_argument("--window", type=_positive_int, default=15, help="default KV cache window (default: 15)")
    cc.add_argument("--sink", type=int, default=3, help="default KV cache sink (default: 3)")
    cc.add_argument("--head-dim", type=_positive_int, default=128, help="attention head size (default: Wan's 128)")

    b = sub.add_parser(
        "batch",
        help="generate one video per prompt of a file",
        description="Generate a video for each prompt of FILE (.txt: one prompt per line; .jsonl: "
        "objects with 'prompt', an optional 'name' and any of the options below by their "
        "names: negative, seed, steps, frames, height, width, guidance, accel, setting, "
        "offload, vae-tiling, max-memory). Options given here apply to every item; an "
        "item's own beat them. Writes DIR/manifest.jsonl; a re-run skips items already "
        "finished. Under `accelerate launch -m genaccel batch ...` the items are split "
        "between the processes (one GPU each), with one manifest.",
        epilog="example: accelerate launch --multi_gpu --num_processes 4 -m genaccel batch prompts.txt "
        "--out videos --accel balanced",
    )
    b.add_argument("file", help="prompts file (.txt or .jsonl)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--format", default="mp4", choices=["mp4", "gif", "webp", "png"], help="video format (default: mp4)")
    _add_model_options(b)
    _add_request_options(b, GENERATE_OPTIONS, accel="none")
    _add_output_options(b)

    ls = sub.add_parser("list", help="models, families, accelerators, presets and compatibility")
    ls.add_argument("--json", action="store_true", help="print everything as one JSON object")

    sc = sub.add_parser(
        "score",
        help="judge a video of the shapes grammar against its prompt (JSON verdict)",
        description="Read a video's shape colour, kind and motion from its frames alone and compare "
        "them with a prompt of the grammar 'a {color} {shape} moving {direction} on a "
        "{background} background' (or 'standing still'). Prints one JSON object.",
    )
    sc.add_argument("video", help="video file (.mp4, .gif, .webp) or folder of PNG frames")
    sc.add_argument("--prompt", required=True, help="the prompt the video was made from")

    c = sub.add_parser(
        "calibrate",
        help="fit TeaCache coefficients, MagCache ratios and token redundancy for a model",
        description="Run plain generations on a few prompts, fit this model's TeaCache rescale "
        "polynomial and MagCache magnitude ratios, measure its token redundancy per "
        "self-attention block and step, and write them to a profile file that "
        "`teacache` (coefficients=auto), `magcache` and `tome`/`asymrnr` "
        "(schedule=profile) use for this model. With --schedule, measure instead how much "
        "reusing a step's residual over each span of later steps changes the final video, "
        "solve the computed-step schedule of every budget (LeMiCa's lexicographic minimax "
        "path) and add them to the model's profile for `schedule(budget=N)`.",
        epilog="example: genaccel calibrate --model tiny --schedule --max-span 6 --prompts prompts.txt",
    )
    _add_model_options(c)
    c.add_argument("--prompt", action="append", default=None, help="a calibration prompt (repeatable)")
    c.add_argument("--prompts", default=None, metavar="FILE", help="file of calibration prompts, one per line")
    c.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    _add_request_options(c, CALIBRATE_OPTIONS)
    c.add_argument(
        "--schedule",
        action="store_true",
        help="measure span errors and solve computed-step schedules (one generation per span and prompt: "
        "about (max-span - 1) x steps per prompt); other sections of the profile are kept",
    )
    c.add_argument(
        "--max-span",
        type=int,
        default=6,
        metavar="N",
        help="with --schedule: longest run of steps one computed step may cover (default: 6)",
    )
    c.add_argument(
        "--resume",
        action="store_true",
        help="with --schedule: go on from the spans a stopped calibration of the same profile and "
        "setting recorded (PROFILE.schedule-SETTING.jsonl, next to the profile)",
    )
    c.add_argument("--out", default=None, help="profile path (default: the user profile folder, keyed by model)")
    c.add_argument("--json", action="store_true", help="print the profile as JSON on the last line")

    bn = sub.add_parser(
        "bench",
        help="measure speedup against quality, side by side with the baseline",
        description="Run the baseline (none) and every --accel configuration on the same prompts and "
        "seeds in one process, after a warm-up, interleaved so machine noise hits all alike. "
        "Writes DIR/results.jsonl (every run), summary.csv and summary.md (one row per "
        "configuration), pareto.png (speedup against PSNR) and compare.mp4 (baseline | "
        "accelerated | amplified difference, first prompt). Re-running with the same DIR "
        "resumes.",
        epilog="example: genaccel bench --accel teacache --accel balanced --accel fast "
        "--prompts benchmarks/eval_prompts.txt --out bench-out",
    )
    _add_model_options(bn)
    bn.add_argument(
        "--accel",
        action="append",
        default=[],
        metavar="SPEC|PRESET",
        help="a configuration to measure (repeatable): a spec or preset, optionally followed by '; decoder=light' "
        "(e.g. 'balanced; decoder=light'); the baseline 'none', decoded by the full VAE, is always included",
    )
    bn.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    bn.add_argument("--prompts", default=None, metavar="FILE", help="file of prompts, one per line")
    bn.add_argument("--seeds", default="0", help="comma-separated seeds, each prompt runs with each (default: 0)")
    _add_request_options(bn, BENCH_OPTIONS)
    bn.add_argument(
        "--repeat", type=_positive_int, default=1, help="timing repetitions per run; medians are reported (default: 1)"
    )
    bn.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations before the sweep (default: 1)")
    bn.add_argument(
        "--memory",
        default="fresh",
        choices=["fresh", "off"],
        help="peak memory per configuration: 'fresh' measures one run of each in a fresh process on CPU "
        "(CUDA: max allocated during each run), 'off' skips it (default: fresh)",
    )
    bn.add_argument("--out", required=True, metavar="DIR", help="output folder (re-using it resumes the sweep)")
    bn.add_argument("--json", action="store_true", help="print the summary rows as JSON on the last line")

    t = sub.add_parser(
        "tune",
        help="find the fastest stack that keeps a quality budget on your model and prompts",
        description="Search stacks of accelerators and their parameters (optuna, seeded, multi-objective: "
        "speedup and PSNR against the baseline, with the budget as constraints) on the tuning "
        "prompts, each trial paired with the baseline video of the same prompt and seed; a "
        "trial clearly below the budget after its first prompt stops there. When --minutes "
        "are up, the front is measured again with `genaccel bench` on held-out prompts and "
        "the fastest member keeping the budget there wins: printed, plotted (DIR/pareto-BUDGET.png) "
        "and, with --save-as, stored as a preset of this model and setting that generate, "
        "batch, bench and the web UI accept at once. Every trial is logged in "
        "DIR/trials.jsonl: the same DIR resumes, and a tune with another budget on it starts "
        "from every trial measured so far (--minutes 0 only re-selects and re-measures).",
        epilog="example: genaccel tune --model tiny --min-psnr 30 --setting long --prompts tune.txt "
        "--holdout eval.txt --minutes 30 --save-as mine --out tune-long",
    )
    _add_model_options(t)
    t.add_argument(
        "--min-psnr",
        type=float,
        required=True,
        metavar="DB",
        help="quality budget: mean PSNR against the baseline video, in dB (e.g. 30)",
    )
    t.add_argument(
        "--max-adherence-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="also keep prompt adherence (the bench's scorer) at most this many points below the baseline's",
    )
    t.add_argument("--prompt", action="append", default=None, help="a tuning prompt (repeatable)")
    t.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="tuning prompts, one per line (default: three built-in prompts); without --holdout every third "
        "one is held out instead",
    )
    t.add_argument("--holdout", default=None, metavar="FILE", help="held-out prompts the front is measured on again")
    t.add_argument("--seeds", default="0", help="comma-separated seeds, each prompt runs with each (default: 0)")
    _add_request_options(t, BENCH_OPTIONS)
    t.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        metavar="N",
        help="tuning time; no trial starts after it (default: 30; 0: re-select from the log only)",
    )
    t.add_argument("--trials", type=int, default=None, metavar="N", help="stop after N new trials (default: no limit)")
    t.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    t.add_argument(
        "--search",
        default=",".join(DEFAULT_GROUPS),
        metavar="GROUPS",
        help="groups of accelerators to stack, comma-separated: pass (magcache, schedule, teacache, fbcache), "
        "cfg (cfgcache), attention (pab), tokens (tome), sparse (svg), compile (compile), quant (int8 through "
        "torchao, where installed; its compile time is spent once, untimed), decoder (the light decoder, where the "
        "model has one) (default: %(default)s)",
    )
    t.add_argument(
        "--save-as",
        default=None,
        metavar="NAME",
        help="store the winner as preset NAME of this model and setting (in --profile)",
    )
    t.add_argument(
        "--profile",
        default=None,
        metavar="PATH",
        help="the profile file --save-as writes (default: the user profile folder, keyed by model)",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (re-using it resumes the tune)")
    t.add_argument("--json", action="store_true", help="print the result as JSON on the last line")

    u = sub.add_parser(
        "ui",
        help="start the web UI in your browser (Gradio)",
        description="Start the web UI: Generate, Compare (against the baseline), Batch and Stream tabs. "
        "It listens on this machine only unless --host says otherwise. One generation runs "
        "at a time; up to --queue-size more wait, each visitor seeing their place; a request "
        "above the limits below or the memory estimate is refused when its turn comes, "
        "without taking the device. Visitors choose among the --models offered, and files are served from "
        "the outputs folder only.",
        epilog="example (a shared lab machine): genaccel ui --host 0.0.0.0 --auth-file ui-users.txt "
        "--models tiny /models/Wan2.1-T2V-1.3B-Diffusers --max-frames 81 --keep-hours 48",
    )
    _add_model_options(
        u,
        "the model shown first (default: the embedded model); offered with the built-in ones "
        "unless --models says otherwise",
    )
    u.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="M",
        help="the models visitors may choose (built-in names, local folders or hub ids; default: --model "
        "and the built-in ones); anything else is refused without being loaded",
    )
    u.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens it to your network)",
    )
    u.add_argument("--port", type=_positive_int, default=7860, help="port (default: %(default)s)")
    u.add_argument(
        "--outputs",
        default=None,
        metavar="DIR",
        help="folder for the videos it writes (default: a new temporary folder)",
    )
    u.add_argument("--share", action="store_true", help="also open a public Gradio share link (off unless asked)")
    u.add_argument(
        "--auth",
        action="append",
        default=None,
        metavar="USER:PASSWORD",
        help="ask visitors for this login (repeatable); prefer --auth-file, which keeps passwords out "
        "of the process list",
    )
    u.add_argument("--auth-file", default=None, metavar="FILE", help="file of USER:PASSWORD lines (# comments)")
    u.add_argument(
        "--queue-size",
        type=_positive_int,
        default=16,
        metavar="N",
        help="generations that may wait for the device; more get a 'busy, try again' (default: %(default)s)",
    )
    limits = u.add_argument_group(
        "limits of one request",
        "a request above them is refused in one line, before any model loads or the device is used",
    )
    limits.add_argument(
        "--max-size",
        type=_positive_int,
        default=1280,
        metavar="PX",
        help="frame height and width (default: %(default)s)",
    )
    limits.add_argument(
        "--max-frames", type=_positive_int, default=257, metavar="N", help="frames (default: %(default)s)"
    )
    limits.add_argument(
        "--max-steps", type=_positive_int, default=100, metavar="N", help="denoising steps (default: %(default)s)"
    )
    limits.add_argument(
        "--max-batch", type=_positive_int, default=32, metavar="N", help="prompts in one batch (default: %(default)s)"
    )
    limits.add_argument(
        "--max-prompt", type=_positive_int, default=2000, metavar="CHARS", help="prompt length (default: %(default)s)"
    )
    limits.add_argument(
        "--max-chunks", type=_positive_int, default=64, metavar="N", help="chunks of one stream (default: %(default)s)"
    )
    limits.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory one run may use on the device, e.g. 20GB (default: what the device has free)",
    )
    u.add_argument(
        "--keep-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="remove the UI's job folders older than this; 0 keeps them (default: %(default)s)",
    )
    return parser


# ----------------------------------------------------------------------------- commands
def _load(args):
    """The model of --model on --device, its weights left on the CPU: the first generation places it as its
    request says (offloading), after its memory estimate was checked, so a model too large for the device
    is refused in one line instead of failing to load."""
    from genaccel.generation.load import load_pipeline
    from genaccel.models.facts import default_model

    args.model = args.model or default_model()
    return load_pipeline(
        args.model, device=args.device, offload=None, context_parallel=getattr(args, "context_parallel", None)
    )


def cmd_generate(args) -> int:
    from genaccel.generation.generate import generate
    from genaccel.generation.prepare import complete, prepare
    from genaccel.io.video import check_output_path, write_preview, write_video
    from genaccel.models.facts import default_model, model_facts

    request = _request_from_args(args, GENERATE_OPTIONS, args.prompt)  # no model needed: fails fast
    main_process = True
    if args.context_parallel:
        from genaccel.engine.distributed import parse_context_parallel, process_device, process_state

        parse_context_parallel(args.context_parallel)  # before the model loads
        processes = process_state(args.device)  # every process makes the same video, one share of the sequence each
        args.device = process_device(processes, args.device)
        main_process = processes is None or processes.is_main_process
    facts = model_facts(args.model or default_model())  # the model's files and profile, read once for the run
    if facts is not None:  # what they tell is checked before the model loads: a typo costs one line
        request = complete(facts, request)
    if args.dry_run:
        return _dry_run(args, request, facts)
    out = check_output_path(args.out)
    previews = _preview_folder(args)
    pipe = _load(args)
    prepared = prepare(pipe, request, facts)
    _tell(prepared.notices)
    preview = None
    if previews is not None and main_process:

        def preview(shown):
            write_preview(shown.frames, previews, shown.step)

    result = generate(
        pipe, prepared, progress=not args.json and main_process, preview=preview, preview_every=args.preview_every or 5
    )
    if not main_process:
        return 0  # the main process writes the video
    write_video(result.frames, out, fps=args.fps, checked=True)
    summary = {"out": str(out), "model": args.model, **result.summary()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"wrote {out} ({summary['num_frames']} frames, {summary['height']}x{summary['width']}) in "
            f"{summary['seconds']:.2f} s"
        )
        print(_accelerated(args.accel, summary))
        if summary.get("previews"):
            print(f"previews: {summary['previews']} in {previews}/ ({summary['preview_seconds']:.2f} s of the run)")
    return 0


def _preview_folder(args) -> Path | None:
    """The checked preview folder of --preview-every/--preview-dir, or None without previews."""
    from genaccel.io.video import check_preview_folder

    if args.preview_every is None and args.preview_dir is None:
        return None
    return check_preview_folder(args.preview_dir or "previews")


def _accelerated(asked: str | None, summary: dict) -> str:
    """One line saying what the accelerators became and what they saved: `balanced -> schedule(budget=11):
    22 of 60 transformer passes computed, 38 skipped`."""
    ran = summary["accel"] or "none"
    name = f"{asked.strip()} -> {ran}" if asked and asked.strip().lower() != ran else ran
    total, skipped = summary["transformer_calls"], summary["skipped_calls"]
    line = f"accelerators: {name}: {total - skipped} of {total} transformer passes computed, {skipped} skipped"
    if summary["attention_reused"]:
        line += f"; {summary['attention_reused']} of {summary['attention_calls']} attention calls reused"
    compiled = (summary.get("accelerator_stats") or {}).get("compile", {}).get("compile_seconds")
    if compiled:  # the first run of a shape; later runs in the same process reuse the graphs
        line += f"; {compiled:.1f} s of it compiling"
    return line


def _tell(notices) -> None:
    """Notices that do not stop a run (a prompt longer than the text encoder reads), one line each."""
    for notice in notices:
        logging.getLogger("genaccel").warning("note: %s", notice)


def _dry_run(args, request, facts) -> int:
    """Print the estimated peak memory of `request` and whether it fits; exit 0 either way."""
    from genaccel.errors import MemoryFitError
    from genaccel.generation.prepare import check_memory, prepare

    pipe = _load(args)
    prepared = prepare(pipe, request, facts, check_fit=False)
    try:
        check_memory(pipe, prepared.request, prepared.spec, prepared.family)
        fits, note = True, None
    except MemoryFitError as exc:
        fits, note = False, str(exc)
    estimate = prepared.memory
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "fits": fits,
                    "message": note,
                    **(estimate.to_dict() if estimate else {"peak_bytes": None}),
                }
            )
        )
    elif estimate is None:
        print("no estimate: this model leaves the frame size to its pipeline (give --frames, --height and --width)")
    else:
        print(f"peak memory: {estimate.describe()}; {'fits' if fits else note}")
    return 0


def cmd_stream(args) -> int:
    import math
    import time

    from genaccel.generation.load import load_pipeline
    from genaccel.generation.stream import StreamSettings, parse_prompt_switches, prepare_stream, stream
    from genaccel.io.video import StreamWriter, check_output_path
    from genaccel.models.facts import EMBEDDED_CAUSAL

    request = _request_from_args(args, STREAM_OPTIONS, args.prompt)  # no model needed: fails fast
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise _user_error(f"--seconds must be a positive number; got {args.seconds}")
    switches = parse_prompt_switches(args.prompt_at, args.chunks)
    if args.window is not None or args.sink is not None:  # checked before the model loads
        from genaccel.generation.spec import check_spec

        check_spec(
            "kvcache("
            + ",".join(
                f"{name}={value}" for name, value in (("window", args.window), ("sink", args.sink)) if value is not None
            )
            + ")"
        )
    out = check_output_path(args.out)
    writer = StreamWriter(out, fps=args.fps, checked=True)  # refuses a non-.mp4 before loading the model
    args.model = args.model or EMBEDDED_CAUSAL
    pipe = load_pipeline(args.model, device=args.device)
    prepared = prepare_stream(pipe, request, window=args.window, sink=args.sink)
    chunks = args.chunks
    if args.seconds is not None:  # chunk 0 makes 1 + t(c - 1) frames, each later chunk t * c
        per_chunk = pipe.vae_scale_factor_temporal * StreamSettings.of(pipe).chunk_frames
        chunks = 1 + max(
            0, math.ceil((args.seconds * args.fps - (per_chunk - pipe.vae_scale_factor_temporal + 1)) / per_chunk)
        )
        if switches and max(switches) >= chunks:
            raise _user_error(f"--prompt-at {max(switches)}: --seconds {args.seconds} makes only {chunks} chunks")
    start, made, stopped = time.perf_counter(), [], False
    frames_total = 0
    try:
        with stream(pipe, prepared, chunks=chunks, prompts_at=switches) as chunk_iter:
            for chunk in chunk_iter:
                writer.write(chunk.frames)
                frames_total += len(chunk.frames)
                made.append(chunk.seconds)
                figures = chunk.summary()
                if args.json:
                    print(json.dumps(figures), flush=True)
                else:
                    note = " (prompt switched: cache re-computed)" if chunk.recached else ""
                    print(
                        f"chunk {chunk.index}: {len(chunk.frames)} frames in {chunk.seconds:.3f} s "
                        f"({len(chunk.frames) / chunk.seconds:.1f} fps), cache {len(chunk.cached_frames)} latent "
                        f"frames, state {chunk.memory_bytes / 1e6:.2f} MB{note}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        stopped = True
    finally:  # also on `kill` (main() makes SIGTERM a KeyboardInterrupt): the video is finished and renamed
        path = writer.close()
    seconds = time.perf_counter() - start
    summary = {
        "summary": True,
        "out": str(path) if path else None,
        "model": args.model,
        "accel": prepared.spec.text,
        "chunks": len(made),
        "frames": frames_total,
        "seconds": round(seconds, 4),
        "fps": round(frames_total / seconds, 3) if seconds else 0.0,
        "mean_chunk_seconds": round(sum(made) / len(made), 4) if made else 0.0,
        "stopped": stopped,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{'stopped: ' if stopped else ''}wrote {path} ({frames_total} frames, {len(made)} chunks) in "
            f"{seconds:.2f} s ({summary['fps']:.1f} fps)"
        )
    return 130 if stopped else 0


def cmd_convert_causal(args) -> int:
    from genaccel.tools.convert_causal import convert_causal_checkpoint

    out = convert_causal_checkpoint(
        Path(args.checkpoint),
        Path(args.base),
        Path(args.out),
        chunk_frames=args.chunk_frames,
        window=args.window,
        sink=args.sink,
        head_dim=args.head_dim,
    )
    print(f"wrote {out}: stream it with  genaccel stream PROMPT --model {out} --device cuda")
    return 0


def _stop_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt (in the main thread); returns the handler it replaces."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


def cmd_batch(args) -> int:
    from genaccel.engine.distributed import process_device, process_state
    from genaccel.generation.batch import check_items_before_loading, read_items, run_batch
    from genaccel.models.facts import default_model

    base = _request_from_args(args, GENERATE_OPTIONS)
    items = read_items(Path(args.file), base)
    completed = check_items_before_loading(args.model or default_model(), items)  # the model's profile, read once
    processes = process_state(args.device)  # accelerate's, when launched as one of several processes
    args.device = process_device(processes, args.device)
    pipe = _load(args)
    summary = run_batch(
        pipe,
        items,
        Path(args.out),
        fmt=args.format,
        fps=args.fps,
        progress=not args.json,
        processes=processes,
        completed=completed,
    )
    summary["model"] = args.model
    if processes is not None and not processes.is_main_process:
        return 0  # the main process reports the batch
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['done']} videos written, {summary['skipped']} already done; manifest: {summary['manifest']}")
    return 0


def cmd_list(args) -> int:
    from genaccel.tools.catalog import catalog, format_catalog

    data = catalog()
    print(json.dumps(data) if args.json else format_catalog(data))
    return 0


def _read_prompts(args) -> list[str]:
    """Prompts from repeated --prompt and a --prompts file (one per line, blank lines and # comments skipped),
    each checked as a batch prompt is."""
    from genaccel.generation.batch import parse_items, read_prompts_text
    from genaccel.generation.request import request_from_options

    prompts = [request_from_options({"prompt": text}, option_prefix="--").prompt for text in args.prompt or []]
    if args.prompts:
        items = parse_items(read_prompts_text(Path(args.prompts)), ".txt", source=args.prompts)
        prompts += [item.prompt for item in items]
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

    from genaccel.tools.calibrate import calibrate, default_profile_path, write_profile

    prompts = _read_prompts(args) or [
        EXAMPLE_PROMPT,
        "a blue square moving up on a gray background",
        "a yellow triangle standing still on a black background",
    ]
    seeds = _parse_seeds(args.seeds)
    base = _request_from_args(args, CALIBRATE_OPTIONS)
    if args.schedule and not 2 <= args.max_span <= 1000:
        raise _user_error(f"--max-span {args.max_span}: must be within 2..1000")
    if args.resume and not args.schedule:
        raise _user_error("--resume goes with --schedule (a plain calibration takes a few runs)")
    pipe = _load(args)
    if args.schedule:
        return _calibrate_schedule(args, pipe, prompts, seeds, base)
    previous = _existing_profile(Path(args.out) if args.out else default_profile_path(pipe), pipe)
    with tqdm(total=len(prompts) * len(seeds), desc="calibrating", disable=args.json) as bar:
        profile = calibrate(pipe, prompts, seeds=seeds, base=base, progress=lambda i, n: bar.update(1))
    # what this calibration does not measure (schedules, tuned presets) is kept
    profile = {**profile, **{k: v for k, v in previous.items() if isinstance(v, dict) and k not in profile}}
    path = write_profile(profile, args.out, pipe)
    if args.json:
        print(json.dumps({"out": str(path), **profile}))
    else:
        print(
            f"wrote profile {path}: teacache coefficients {['%.4g' % c for c in profile['teacache']['coefficients']]}"
        )
    return 0


def _existing_profile(path: Path, pipe) -> dict:
    """The profile a calibration adds to: the file at `path`, else the model's current one."""
    from genaccel.models.profiles import load_profile, pipeline_model_key, read_profile

    return read_profile(path) if path.is_file() else load_profile(pipeline_model_key(pipe))


def _calibrate_schedule(args, pipe, prompts, seeds, base) -> int:
    from tqdm import tqdm

    from genaccel.tools.calibrate import default_profile_path, write_profile
    from genaccel.tools.calibrate_schedule import calibrate_schedule, merge_schedule

    path = Path(args.out) if args.out else default_profile_path(pipe)
    previous = _existing_profile(path, pipe)  # before the work: a broken file is refused at once
    setting = base.setting or "default"
    log = path.with_name(f"{path.name}.schedule-{setting}.jsonl")  # every measured span, to resume from
    if log.exists() and not args.resume:
        raise _user_error(
            f"{log}: a calibration of these schedules stopped part-way; --resume goes on from it "
            "(delete it to start again)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(desc="calibrating schedules", unit="run", disable=args.json) as bar:

        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        section = calibrate_schedule(
            pipe, prompts, seeds=seeds, base=base, max_span=args.max_span, progress=progress, log=log
        )
    profile = merge_schedule(previous, section, setting)
    written = write_profile(profile, path, pipe)
    log.unlink()  # the profile holds the errors now
    table = next(iter(section.values()))
    budgets = sorted(int(k.removeprefix("computed")) for k in table if k.startswith("computed"))
    if args.json:
        print(json.dumps({"out": str(written), "schedule": section}))
    else:
        steps = next(iter(section)).removeprefix("steps")
        print(
            f"wrote profile {written}: schedules for {steps} steps at the {setting} setting, budgets "
            f"{budgets[0]}..{budgets[-1]} (use schedule(budget=N))"
        )
    return 0


def cmd_score(args) -> int:
    from genaccel.io.video import read_video
    from genaccel.pipelines.score import score_frames
    from genaccel.pipelines.shapes import parse_prompt

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
        raise _user_error(
            f"cannot read video {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    print(json.dumps({"video": str(path), **score_frames(frames, expected).to_dict()}))
    return 0


def cmd_bench(args) -> int:
    from genaccel.tools.bench import BenchPlan, read_memory, run_bench
    from genaccel.tools.bench.report import summarize, summary_markdown

    prompts = _read_prompts(args)
    if not prompts:
        raise _user_error("bench needs prompts: --prompt TEXT (repeatable) or --prompts FILE")
    plan = BenchPlan(
        accels=args.accel,
        prompts=prompts,
        seeds=_parse_seeds(args.seeds),
        request=_request_from_args(args, BENCH_OPTIONS),
        repeat=args.repeat,
        warmup=args.warmup,
        memory=args.memory,
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _user_error(f"--out {out} is a file; bench writes a folder")
    pipe = _load(args)
    rows = run_bench(pipe, plan, out, progress=not args.json, model=args.model, device=args.device)
    summary = summarize(rows, plan, read_memory(out))
    if args.json:
        print(json.dumps({"out": str(out), "model": args.model, "summary": summary}))
    else:
        print(summary_markdown(summary, plan), end="")
        print(f"wrote {out}/results.jsonl, summary.csv, summary.md, pareto.png, compare.mp4")
    return 0


def _preset_name(text: str | None) -> str | None:
    """A --save-as name: a word that is not an accelerator's name nor 'none' or 'custom'."""
    import re

    from genaccel.accelerators import ACCELERATORS

    if text is None:
        return None
    name = text.strip().lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,39}", name):
        raise _user_error(f"--save-as {text!r}: a preset name is one word of letters, digits, - and _ (at most 40)")
    if name in ACCELERATORS or name in ("none", "custom"):
        raise _user_error(f"--save-as {name}: that is an accelerator's or a reserved name; choose another")
    return name


def cmd_tune(args) -> int:
    from genaccel.generation.request import split_configuration
    from genaccel.tools.tune import SPACE, TunePlan, run_tune, save_preset, split_prompts

    name = _preset_name(args.save_as)
    prompts = _read_prompts(args) or [
        EXAMPLE_PROMPT,
        "a blue square moving up on a gray background",
        "a yellow triangle standing still on a black background",
    ]
    if args.holdout:
        holdout = [item.prompt for item in _prompt_items(args.holdout)]
    else:
        prompts, holdout = split_prompts(prompts)
    groups = tuple(g.strip() for g in args.search.split(",") if g.strip())
    unknown = [g for g in groups if g not in SPACE]
    if unknown or not groups:
        raise _user_error(f"--search {args.search!r}: groups are {', '.join(SPACE)}")
    plan = TunePlan(
        min_psnr=args.min_psnr,
        prompts=prompts,
        holdout=holdout,
        max_adherence_drop=args.max_adherence_drop,
        seeds=_parse_seeds(args.seeds),
        request=_request_from_args(args, BENCH_OPTIONS),
        minutes=args.minutes,
        max_trials=args.trials,
        seed=args.seed,
        groups=groups,
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _user_error(f"--out {out} is a file; tune writes a folder")
    pipe = _load(args)
    from genaccel.tools.calibrate import default_profile_path

    profile_path = Path(args.profile) if args.profile else default_profile_path(pipe)
    base_profile = _existing_profile(profile_path, pipe) if name else {}  # a broken file is refused before the work
    result = run_tune(pipe, plan, out, progress=not args.json, model=args.model)
    winner = result.winner
    saved = None
    if winner and name:
        figures = {
            "min_psnr": plan.min_psnr,
            "speedup": round(winner["speedup"], 3),
            "psnr": round(winner["psnr"], 2),
            "measured_on": f"{len(plan.holdout)} held-out prompts",
        }
        if plan.max_adherence_drop is not None:
            figures["max_adherence_drop"] = plan.max_adherence_drop
        spec, overrides = split_configuration(winner["accel"])
        figures.update(overrides)  # a preset names accelerators; the decoder it was measured with is noted
        saved = save_preset(profile_path, name, plan.request.setting, spec, figures, base_profile)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "trials": len(result.trials),
                    "tuning_seconds": round(result.tuning_seconds, 1),
                    "front": result.front,
                    "holdout": result.holdout,
                    "winner": winner,
                    "saved": str(saved) if saved else None,
                }
            )
        )
        return 0 if winner else 1
    _print_tune(result, plan, out)
    if winner is None:
        print(f"no stack kept {plan.min_psnr:g} dB on the held-out prompts: nothing saved")
        return 1
    if saved:
        decoder = split_configuration(winner["accel"])[1].get("decoder")
        use = f"--accel {name}" + (f" --decoder {decoder}" if decoder else "")
        print(f"saved preset '{name}' ({plan.request.setting} setting) in {saved}: use {use}")
    return 0


def _prompt_items(path: str) -> list:
    from genaccel.generation.batch import parse_items, read_prompts_text

    return parse_items(read_prompts_text(Path(path)), ".txt", source=path)


def _print_tune(result, plan, out: Path) -> None:
    done = [t for t in result.trials if not t["pruned"]]
    print(
        f"{len(result.trials)} trials ({len(result.trials) - len(done)} stopped early), "
        f"{result.tuning_seconds / 60:.1f} min this run; front within {plan.min_psnr:g} dB on the tuning prompts:"
    )
    for row in result.front:
        print(f"  {row['speedup']:.2f}x  {row['psnr']:.1f} dB  {row['spec']}")
    if result.holdout:
        print(f"on {len(plan.holdout)} held-out prompts ({out}/holdout-*/summary.md):")
        for row in result.holdout[1:]:
            mark = "*" if result.winner and row["accel"] == result.winner["accel"] else " "
            print(f" {mark}{row['speedup']:.2f}x  {row['psnr']:.1f} dB  {row['accel']}")
    print(f"wrote {out}/trials.jsonl and a plot of the trials, {out}/pareto-*.png")


def cmd_ui(args) -> int:
    from genaccel.ui.app import launch

    launch(
        host=args.host,
        port=args.port,
        model=args.model,
        device=args.device,
        output_dir=args.outputs,
        share=args.share,
        models=args.models,
        auth=args.auth,
        auth_file=args.auth_file,
        queue_size=args.queue_size,
        max_size=args.max_size,
        max_frames=args.max_frames,
        max_steps=args.max_steps,
        max_batch=args.max_batch,
        max_prompt=args.max_prompt,
        max_chunks=args.max_chunks,
        max_memory=args.max_memory,
        keep_hours=args.keep_hours,
    )
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "stream": cmd_stream,
    "convert-causal": cmd_convert_causal,
    "score": cmd_score,
    "batch": cmd_batch,
    "list": cmd_list,
    "calibrate": cmd_calibrate,
    "bench": cmd_bench,
    "tune": cmd_tune,
    "ui": cmd_ui,
}


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
    previous = _stop_on_sigterm()  # `kill` stops a run like Ctrl-C: temporary files are removed on the way out
    try:
        return COMMANDS[args.command](args)
    except GenAccelError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # a batch file's errors: one line each
            print(f"genaccel: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # the file system refusing a write that no writer of genaccel's named
        from genaccel.io.files import REFUSALS

        if exc.errno not in REFUSALS:
            raise
        print(f"genaccel: error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("genaccel: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
