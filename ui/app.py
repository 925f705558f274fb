"""The Gradio app: Generate, Compare and Batch tabs over one set of model and accelerator settings, and a
Stream tab for causal models (the video plays while it is made; the prompt can change on the fly).
The accelerators are grouped by what they do, the page starts on the model's `balanced` preset, a
Decoder group chooses the full or the light decoder, and Generate shows live previews while it denoises.

    genaccel ui [--host 127.0.0.1] [--port 7860] [--model M]

The page is wiring only: `genaccel.ui.service.Studio` does the work through genaccel's Python
API, and `genaccel.ui.controls` maps the accelerator controls to spec strings.

On a shared machine: generations wait in Gradio's bounded queue for the one device (each visitor
sees their place), every request is held to the server's limits before it waits, visitors choose
only among the offered models, files are served from the output folder only, old outputs are
removed after `keep_hours`, and `auth` asks for a user name and password.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Sequence

import gradio as gr

from genaccel.accelerators import ACCELERATORS
from genaccel.attention.backends import BACKENDS
from genaccel.errors import GenAccelError, InputError
from genaccel.generation.request import (
    EXAMPLE_PROMPT,
    FIELDS,
    OFFLOAD_MODES,
    GenerationRequest,
    field_limits,
    request_from_options,
)
from genaccel.ui.controls import (
    CONTROL_GROUPS,
    CONTROL_LAYOUT,
    controls_from_spec,
    spec_from_controls,
    start_preset,
)
from genaccel.ui.jobs import Cancelled
from genaccel.ui.service import (
    COMPARE_COLUMNS,
    DECODERS,
    Studio,
    UILimits,
    check_decoder,
    check_keep_hours,
    not_offered,
)

log = logging.getLogger("genaccel")

STREAM_FPS = 8  # the live view's and the stream file's frame rate
PREVIEW_EVERY = 5  # the Generate tab's live previews: every K denoising steps (0: none)
# One concurrency slot shared by every generating event: one job at a time on the device. Not a setting:
# jobs share the cached pipelines, whose accelerators and placement a job changes while it runs.
GENERATION_SLOT = "device"
QUEUE_SIZE = 16  # generations that may wait for the device by default (the running one aside)
UPLOAD_LIMIT = "1mb"  # the largest upload (a batch's prompts file): 32 prompts of 2000 characters is 64 kB


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def _number(value):
    """Empty number fields mean "the model's default"."""
    return None if value in (None, "") else value


def _fail(exc: Exception):
    """A readable message in the page instead of a traceback."""
    if isinstance(exc, Cancelled):
        return gr.Error("Cancelled.")
    return gr.Error(str(exc))


def _model_summary(info: dict) -> str:
    default = info["settings"]["default"]
    size = (
        f"{default.get('width', '?')}x{default.get('height', '?')}, {default.get('num_frames', '?')} frames, "
        f"{default.get('num_inference_steps', '?')} steps"
    )
    return (
        f"**{info['model']}**: {info['title']} family; frames {info['frames_rule']}; default {size}; "
        f"settings: {', '.join(info['settings'])}."
    )


def _model_choice(choices: list[str], offered: list[str], **kwargs) -> gr.Dropdown:
    """A dropdown of models whose value must be one the server offers: anything else, from the page or an
    API caller, gets the Studio's one refusal before a handler runs (Gradio's own names the value and
    lists every choice)."""
    dropdown = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=False, **kwargs)
    offered = tuple(offered)

    def preprocess(payload):
        if payload is not None and payload not in offered:
            raise gr.Error(str(not_offered(payload)))
        return payload

    # On the instance: a subclass of a Gradio component makes Gradio write a .pyi file beside this module.
    dropdown.preprocess = preprocess
    return dropdown


def _limits_text(limits: UILimits) -> str:
    parts = [
        f"{limits.max_size} px a side" if limits.max_size else "",
        f"{limits.max_frames} frames" if limits.max_frames else "",
        f"{limits.max_steps} steps" if limits.max_steps else "",
    ]
    parts = [p for p in parts if p]
    return f"This server makes at most {', '.join(parts)}." if parts else ""


def _queue_text(queue_size: int | None) -> str:
    if not queue_size:
        return "One generation runs at a time; the others wait in the queue, each page showing its place."
    # The page's words for a full queue are Gradio's own ("This application is currently busy"): say why here.
    return (
        f"One generation runs at a time; up to {queue_size} more can wait in the queue, each page showing its "
        "place. When the queue is full, the page says the application is busy: try again when a video is done."
    )


def build_app(studio: Studio, queue_size: int | None = QUEUE_SIZE) -> gr.Blocks:
    """The Blocks app for a Studio (not launched; its queue is set up by `launch`)."""
    first = studio.model_info(studio.default_model)
    defaults = first["settings"]["default"]
    # Gradio's copies of results (in its temporary folder) age out with the Studio's own folders.
    keep = int(studio.keep_hours * 3600)
    delete_cache = (min(keep, 3600), keep) if keep else None

    with gr.Blocks(title="genaccel", delete_cache=delete_cache) as app:
        gr.Markdown(
            "# genaccel\nText-to-video with training-free acceleration, measured against the baseline.\n\n"
            f"<small>{_queue_text(queue_size)}</small>",
            elem_id="intro",
        )
        with gr.Row():
            model = _model_choice(
                studio.models,
                studio.models,
                scale=3,
                label="Model",
                elem_id="model",
                info="the models this server offers",
            )
            setting = gr.Radio(
                list(first["settings"]), value="default", label="Setting", scale=1, info="named sizes of the model"
            )
        model_md = gr.Markdown(_model_summary(first), elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with gr.Accordion("Video settings", open=True):
                    with gr.Row():
                        width = gr.Number(
                            defaults.get("width"), label="Width", precision=0, minimum=field_limits("width")[0]
                        )
                        height = gr.Number(
                            defaults.get("height"), label="Height", precision=0, minimum=field_limits("height")[0]
                        )
                    with gr.Row():
                        frames = gr.Number(defaults.get("num_frames"), label="Frames", precision=0)
                        steps = gr.Number(defaults.get("num_inference_steps"), label="Steps", precision=0)
                    guidance = gr.Number(defaults.get("guidance_scale"), label="Guidance scale")
                    gr.Markdown(f"<small>{_limits_text(studio.limits)}</small>", elem_id="limits")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, scale=3)
                        dice = gr.Button("Random seed", scale=1, elem_id="random-seed")
                with gr.Accordion("Memory", open=False):
                    offload = gr.Dropdown(
                        list(OFFLOAD_MODES),
                        value="none",
                        label="Offload",
                        elem_id="offload",
                        info=FIELDS["offload"].metadata["help"],
                    )
                    tiling = gr.Checkbox(
                        False, label="VAE tiling", elem_id="vae-tiling", info=FIELDS["vae_tiling"].metadata["help"]
                    )
                with gr.Accordion("Acceleration", open=True):
                    attention = gr.Dropdown(
                        list(BACKENDS),
                        value="native",
                        label="Attention backend",
                        elem_id="attention",
                        info=FIELDS["attention"].metadata["help"],
                    )
                    # The page starts on the model's balanced preset: a visitor's first video is accelerated.
                    start = start_preset(first["presets"]["default"])
                    start_values = _drop_unsupported(
                        controls_from_spec(start, _family(first), first["preset_specs"]["default"]), first
                    )
                    enabled = _enabled(start_values)
                    preset = gr.Dropdown(
                        ["none", *first["presets"]["default"], "custom"],
                        value=start,
                        label="Preset",
                        elem_id="preset",
                        info="fills the accelerators below; editing them makes it 'custom'",
                    )
                    toggles, params, groups, sections = {}, {}, {}, {}
                    for title, names in CONTROL_GROUPS.items():
                        opened = any(enabled[name] for name in names)
                        with gr.Accordion(title, open=opened, elem_id=f"group-{_slug(title)}") as sections[title]:
                            for name in names:
                                toggles[name], groups[name], params[name] = _accelerator_controls(
                                    name, start_values, first
                                )
                    with gr.Accordion("Decoder", open=True, elem_id="group-decoder"):
                        decoder = gr.Radio(
                            list(DECODERS), value="full", label="Decoder", elem_id="decoder", **_decoder_props(first)
                        )
                    support_md = gr.Markdown(_support_text(first), elem_id="support-notes")
                    spec = gr.Textbox(
                        spec_from_controls(start_values), label="Spec (what runs; editable)", elem_id="spec"
                    )

            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Generate", id="generate"):
                        prompt = gr.Textbox(EXAMPLE_PROMPT, label="Prompt", lines=2, elem_id="prompt")
                        with gr.Row():
                            negative = gr.Textbox("", label="Negative prompt", scale=3)
                            preview_every = gr.Number(
                                PREVIEW_EVERY,
                                label="Preview every K steps",
                                info="0: off; needs the model's light decoder",
                                precision=0,
                                minimum=0,
                                scale=1,
                                elem_id="preview-every",
                            )
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                            stop = gr.Button("Cancel", elem_id="generate-cancel")
                        # Shown while a run makes previews: its latent frames side by side, as the light decoder
                        # sees the current estimate of the video.
                        preview = gr.Image(
                            label="Preview (light decoder, while denoising)",
                            elem_id="preview",
                            interactive=False,
                            visible=False,
                            height=160,
                            buttons=[],
                        )
                        video = gr.Video(label="Video", elem_id="video", autoplay=True, loop=True, height=384)
                        download = gr.File(label="Download")
                        stats = gr.JSON(label="Figures of this run", elem_id="figures")
                    with gr.Tab("Compare", id="compare"):
                        c_prompt = gr.Textbox(EXAMPLE_PROMPT, label="Prompt", lines=2, elem_id="compare-prompt")
                        c_negative = gr.Textbox("", label="Negative prompt")
                        with gr.Row():
                            c_run = gr.Button("Compare with baseline", variant="primary", elem_id="compare-button")
                            c_stop = gr.Button("Cancel")
                        with gr.Row():
                            c_base = gr.Video(
                                label="Baseline", elem_id="compare-baseline", autoplay=True, loop=True, height=256
                            )
                            c_fast = gr.Video(
                                label="Accelerated", elem_id="compare-accelerated", autoplay=True, loop=True, height=256
                            )
                        c_side = gr.Video(
                            label="baseline | accelerated | |difference| x4 (the bench's compare video)",
                            elem_id="compare-difference",
                            autoplay=True,
                            loop=True,
                            height=256,
                        )
                        c_table = gr.Dataframe(
                            headers=COMPARE_COLUMNS,
                            label="Speedup and quality (genaccel bench)",
                            elem_id="compare-table",
                        )
                    with gr.Tab("Batch", id="batch"):
                        b_text = gr.Textbox("", label="Prompts (one per line)", lines=5, elem_id="batch-prompts")
                        b_file = gr.File(
                            label="...or a .txt / .jsonl file", file_types=[".txt", ".jsonl"], type="filepath"
                        )
                        with gr.Row():
                            b_run = gr.Button("Run batch", variant="primary", elem_id="batch-button")
                            b_stop = gr.Button("Cancel")
                        b_status = gr.Markdown("", elem_id="batch-status")
                        b_gallery = gr.Gallery(label="Videos", columns=4, elem_id="batch-gallery")
                        b_zip = gr.File(label="All videos and the manifest (zip)")
                    with gr.Tab("Stream", id="stream"):
                        gr.Markdown(
                            "A causal model makes the video chunk by chunk, each chunk attending a rolling "
                            "KV cache of the earlier ones; chunks play as they come. Change the prompt "
                            "while it runs; Stop ends it and keeps the video."
                        )
                        if not studio.stream_models:
                            gr.Markdown("*This server offers no causal model.*")
                        with gr.Row():
                            s_model = _model_choice(
                                studio.stream_models,
                                studio.models,
                                label="Causal model",
                                scale=2,
                                elem_id="stream-model",
                            )
                            most = studio.limits.max_chunks
                            s_chunks = gr.Number(
                                min(40, most or 40),
                                precision=0,
                                minimum=0,
                                elem_id="stream-chunks",
                                label=f"Chunks (0: until stopped{f', at most {most}' if most else ''})",
                            )
                            s_window = gr.Textbox("", label="Window (latent frames)", placeholder="the model's")
                            s_sink = gr.Textbox("", label="Sink (latent frames)", placeholder="the model's")
                            s_decoder = gr.Radio(
                                list(DECODERS),
                                value="full",
                                label="Decoder",
                                info="light: the one the model ships",
                                elem_id="stream-decoder",
                            )
                        s_prompt = gr.Textbox(EXAMPLE_PROMPT, label="Prompt", elem_id="stream-prompt")
                        with gr.Row():
                            s_run = gr.Button("Start stream", variant="primary", elem_id="stream-button")
                            s_stop = gr.Button("Stop", elem_id="stream-stop")
                        with gr.Row():
                            s_next = gr.Textbox("", label="Change the prompt to", scale=3, elem_id="stream-next-prompt")
                            s_switch = gr.Button("Change prompt", scale=1, elem_id="stream-switch")
                        s_live = gr.Image(
                            label="Live", elem_id="stream-live", height=320, interactive=False, buttons=[]
                        )
                        s_status = gr.Markdown("", elem_id="stream-status")
                        s_full = gr.Video(label="The whole stream", elem_id="stream-video", loop=True, height=256)

        # In CONTROL_LAYOUT's order, as the flat values go (the page shows them grouped).
        controls = [c for name in CONTROL_LAYOUT for c in (toggles[name], *params[name])]
        param_groups = [groups[name] for name in CONTROL_LAYOUT]
        request_inputs = [
            model,
            setting,
            width,
            height,
            frames,
            steps,
            guidance,
            seed,
            spec,
            offload,
            tiling,
            attention,
            decoder,
        ]

        # ---------------------------------------------------------------- model, setting, controls
        def on_model(model_name, setting_name, preset_name, *values):
            try:
                info = studio.model_info(model_name)
            except (GenAccelError, OSError) as exc:
                raise _fail(exc) from None
            chosen = setting_name if setting_name in info["settings"] else "default"
            d = info["settings"][chosen]
            values = list(values)
            names = info["presets"][chosen]
            if preset_name in names:
                values = controls_from_spec(preset_name, _family(info), info["preset_specs"][chosen])
            values = _drop_unsupported(values, info)
            offered = ["none", *names, "custom"]
            return [
                gr.update(value=_model_summary(info)),
                gr.update(choices=list(info["settings"]), value=chosen),
                gr.update(choices=offered, value=preset_name if preset_name in offered else "custom"),
                d.get("width"),
                d.get("height"),
                d.get("num_frames"),
                d.get("num_inference_steps"),
                d.get("guidance_scale"),
                _support_text(info),
                *_control_updates(values, info),
                *_section_updates(values),
                _decoder_update(info),
                _safe_spec(values),
            ]

        def on_setting(model_name, setting_name):
            try:
                d = studio.model_info(model_name)["settings"].get(setting_name, {})
            except (GenAccelError, OSError) as exc:
                raise _fail(exc) from None
            return (
                d.get("width"),
                d.get("height"),
                d.get("num_frames"),
                d.get("num_inference_steps"),
                d.get("guidance_scale"),
            )

        def on_preset(model_name, setting_name, preset_name, *values):
            if preset_name == "custom":
                unchanged = len(controls) + len(param_groups) + len(sections) + 1
                return [gr.update() for _ in range(unchanged)]
            try:
                info = studio.model_info(model_name)
                values = controls_from_spec(preset_name, _family(info), info["preset_specs"].get(setting_name))
            except (GenAccelError, OSError) as exc:
                raise _fail(exc) from None
            return [*_control_updates(values, info), *_section_updates(values), _safe_spec(values)]

        def on_control(*values):
            groups_visible = [gr.update(visible=bool(values[i])) for i in _toggle_positions()]
            return [*groups_visible, _safe_spec(list(values)), "custom"]

        preset_outputs = [*controls, *param_groups, *sections.values(), spec]

        model_events = dict(
            fn=on_model,
            inputs=[model, setting, preset, *controls],
            outputs=[
                model_md,
                setting,
                preset,
                width,
                height,
                frames,
                steps,
                guidance,
                support_md,
                *controls,
                *param_groups,
                *sections.values(),
                decoder,
                spec,
            ],
        )
        # always_last: a choice made while the previous one loads is not dropped (Gradio's default: "once").
        model.input(**model_events, api_name="model_info", trigger_mode="always_last")
        # The page's own quick updates skip the queue: they keep working while generations fill it.
        setting.input(
            on_setting, [model, setting], [width, height, frames, steps, guidance], api_name=False, queue=False
        ).then(  # a preset may differ per setting (`genaccel tune --save-as`)
            on_preset,
            [model, setting, preset, *controls],
            preset_outputs,
            api_name=False,
            queue=False,
        )
        preset.input(
            on_preset,
            [model, setting, preset, *controls],
            preset_outputs,
            api_name="preset",
            queue=False,
        )
        for component in controls:
            component.input(on_control, controls, [*param_groups, spec, preset], api_name=False, queue=False)
        dice.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_name=False, queue=False)

        # ---------------------------------------------------------------- generate
        def on_generate(
            prompt_text,
            negative_text,
            model_name,
            setting_name,
            w,
            h,
            f,
            n,
            g,
            s,
            spec_text,
            off,
            tile,
            attn,
            dec,
            every,
            request: gr.Request,
            progress=gr.Progress(),
        ):
            events = _follow(
                lambda: studio.generate(
                    _session(request),
                    model_name,
                    _request(
                        prompt_text or "",
                        negative_text,
                        setting_name,
                        w,
                        h,
                        f,
                        n,
                        g,
                        s,
                        spec_text,
                        off,
                        tile,
                        attn,
                        dec,
                    ),
                    preview_every=every,
                ),
                progress,
            )
            keep = gr.update()
            yield keep, keep, keep, gr.update(value=None, visible=False)  # no preview of an earlier run stays
            for kind, value in events:
                if kind == "previewing":  # previews will come: an empty preview box until the first
                    yield keep, keep, keep, gr.update(value=None, visible=True)
                elif kind == "preview":
                    yield keep, keep, keep, _crisp(value["image"])
                elif kind == "done":
                    yield value["video"], value["video"], value["figures"], None
                    return
            raise gr.Error("the job ended without a result")

        gen_event = run.click(
            on_generate,
            [prompt, negative, *request_inputs, preview_every],
            [video, download, stats, preview],
            api_name="generate",
            concurrency_id=GENERATION_SLOT,
            concurrency_limit=1,
            show_progress_on=[video],  # the progress bar over the video to come, not over the previews
        )
        # However the run ends (a video, an error, a cancel), the preview box goes until the next run's previews.
        gen_event.then(lambda: gr.update(visible=False), None, preview, queue=False, api_name=False)

        # ---------------------------------------------------------------- compare
        def on_compare(
            prompt_text,
            negative_text,
            model_name,
            setting_name,
            w,
            h,
            f,
            n,
            g,
            s,
            spec_text,
            off,
            tile,
            attn,
            dec,
            request: gr.Request,
            progress=gr.Progress(),
        ):
            done = _finish(
                lambda: studio.compare(
                    _session(request),
                    model_name,
                    _request(
                        prompt_text or "",
                        negative_text,
                        setting_name,
                        w,
                        h,
                        f,
                        n,
                        g,
                        s,
                        spec_text,
                        off,
                        tile,
                        attn,
                        dec,
                    ),
                ),
                progress,
            )
            table = [[r.get(h) for h in COMPARE_COLUMNS] for r in done["rows"]]
            return done["baseline"], done["accelerated"], done["side_by_side"], table

        cmp_event = c_run.click(
            on_compare,
            [c_prompt, c_negative, *request_inputs],
            [c_base, c_fast, c_side, c_table],
            api_name="compare",
            concurrency_id=GENERATION_SLOT,
            concurrency_limit=1,
        )

        # ---------------------------------------------------------------- batch
        def on_batch(
            text,
            upload,
            negative_text,
            model_name,
            setting_name,
            w,
            h,
            f,
            n,
            g,
            s,
            spec_text,
            off,
            tile,
            attn,
            dec,
            request: gr.Request,
            progress=gr.Progress(),
        ):
            try:
                base = _request(None, negative_text, setting_name, w, h, f, n, g, s, spec_text, off, tile, attn, dec)
                items = studio.batch_items(text, upload, base)
                gallery = []
                yield gallery, f"0 of {len(items)} done", None
                for kind, value in studio.batch(_session(request), model_name, items):
                    if kind == "progress":
                        step, total, _ = value
                        progress((step, total), desc=f"video {len(gallery) + 1} of {len(items)}", unit="steps")
                    elif kind == "item":
                        gallery.append((value["video"], value["prompt"]))
                        yield gallery, f"{len(gallery)} of {len(items)} done", None
                    elif kind == "done":
                        yield (
                            gallery,
                            f"{value['done']} videos done; manifest and videos in the zip below.",
                            value["zip"],
                        )
            except (GenAccelError, Cancelled, OSError) as exc:
                raise _fail(exc) from None

        batch_event = b_run.click(
            on_batch,
            [b_text, b_file, negative, *request_inputs],
            [b_gallery, b_status, b_zip],
            api_name="batch",
            concurrency_id=GENERATION_SLOT,
            concurrency_limit=1,
        )

        # ---------------------------------------------------------------- stream
        def on_stream(prompt_text, model_name, chunks, window, sink, s, dec, request: gr.Request):
            try:
                options = {"prompt": prompt_text or "", "seed": _number(s) or 0, "decoder": check_decoder(dec)}
                req = request_from_options(options)
                events = studio.stream(
                    _session(request),
                    model_name,
                    req,
                    chunks=_number(chunks),
                    window=_whole(window, "Window"),
                    sink=_whole(sink, "Sink"),
                )
                yield None, "Starting the stream...", None
                clock = LiveClock(STREAM_FPS)
                for kind, value in events:
                    if kind == "chunk":
                        f = value["figures"]
                        note = " (prompt changed: cache re-computed)" if f["recached"] else ""
                        status = (
                            f"chunk {f['chunk']}: {f['frames']} frames in {f['seconds']:.2f} s, cache "
                            f"{len(f['cached_frames'])} latent frames; prompt: *{f['prompt']}*{note}"
                        )
                        for frame in value["frames"]:  # played at the video's frame rate as they come
                            clock.wait()
                            yield _enlarged(frame), status, None
                    elif kind == "done":
                        end = "stopped" if value["stopped"] else "finished"
                        yield None, f"Stream {end}: {value['chunks']} chunks, {value['frames']} frames.", value["video"]
            except (GenAccelError, Cancelled, OSError) as exc:
                raise _fail(exc) from None

        s_run.click(
            on_stream,
            [s_prompt, s_model, s_chunks, s_window, s_sink, seed, s_decoder],
            [s_live, s_status, s_full],
            api_name="stream",
            concurrency_id=GENERATION_SLOT,
            concurrency_limit=1,
        )

        def on_switch(text, request: gr.Request):
            try:
                if not studio.switch_prompt(_session(request), text or ""):
                    raise gr.Error("No stream is running.")
            except GenAccelError as exc:
                raise _fail(exc) from None
            return ""

        s_switch.click(on_switch, [s_next], [s_next], queue=False, api_name="stream_prompt")
        s_next.submit(on_switch, [s_next], [s_next], queue=False, api_name=False)

        def on_stop(request: gr.Request) -> None:
            """End this page's stream after the chunk being made; its video is kept."""
            studio.stop_stream(_session(request))

        s_stop.click(on_stop, None, None, queue=False, api_name="stream_stop")

        # ---------------------------------------------------------------- cancel
        def on_cancel(request: gr.Request) -> bool:
            """Stop this page's running job at its next denoising step (True if there was one)."""
            return studio.cancel(_session(request))

        for button, event in ((stop, gen_event), (c_stop, cmp_event), (b_stop, batch_event)):
            button.click(on_cancel, None, None, cancels=[event], queue=False, api_name=False)
        gr.api(on_cancel, api_name="cancel", queue=False)

    return app


class LiveClock:
    """Paces the live view at `fps`; when the stream falls behind, frames show as soon as they come."""

    def __init__(self, fps: int):
        self.interval = 1.0 / fps
        self.next = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)  # the page's playback speed, not a wait on work
        self.next = max(self.next, now) + self.interval


def _enlarged(frame, size: int = 256):
    """A small frame scaled up by whole pixels (nearest), so the live view shows it crisply."""
    k = max(1, size // max(frame.shape[:2]))
    return frame.repeat(k, axis=0).repeat(k, axis=1)


def _crisp(image, height: int = 160, widest: int = 1280):
    """A small preview strip scaled up by whole pixels (nearest) to about `height`, no wider than `widest`, so the
    page shows its pixels instead of a blur."""
    h, w = image.shape[:2]
    k = max(1, min(height // max(h, 1), widest // max(w, 1)))
    return image.repeat(k, axis=0).repeat(k, axis=1)


def _whole(text, label: str) -> int | None:
    """A whole number typed in a box; empty means the model's default."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"{label} must be a whole number; got '{text}'")
    return int(text)


def _follow(start, progress):
    """Run a Studio job, moving the page's progress bar, and yield its other events; errors become page messages."""
    try:
        for kind, value in start():
            if kind == "progress":
                step, total, label = value
                progress((step, total), desc=f"{label}: denoising" if label else "denoising", unit="steps")
            else:
                yield kind, value
    except (GenAccelError, Cancelled, OSError) as exc:
        raise _fail(exc) from None


def _finish(start, progress) -> dict:
    """Run a Studio job to its end, moving the page's progress bar; its result. Errors become page messages."""
    for kind, value in _follow(start, progress):
        if kind == "done":
            return value
    raise gr.Error("the job ended without a result")


def _slug(title: str) -> str:
    """An element id from a group title ("Memory / systems" -> "memory-systems")."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in title.lower()).split())


def _accelerator_controls(name: str, values: list, info: dict):
    """One accelerator's toggle, the column of its parameters (shown while it is on) and the parameter inputs,
    filled from the flat control `values`."""
    position = _toggle_positions()[list(CONTROL_LAYOUT).index(name)]
    on, chosen = bool(values[position]), values[position + 1 : position + 1 + len(CONTROL_LAYOUT[name])]
    toggle = gr.Checkbox(
        on,
        label=f"{name}: {ACCELERATORS[name].summary}",
        interactive=name not in info["unsupported"],  # the reason is listed once, under the groups
        elem_id=f"accel-{name}",
    )
    inputs = []
    with gr.Column(visible=on) as column:
        for c, value in zip(CONTROL_LAYOUT[name], chosen):
            if c.kind == "bool":
                inputs.append(gr.Checkbox(value, label=c.name, info=c.help))
            elif c.kind in ("int", "float"):
                inputs.append(gr.Number(value, label=c.name, info=c.help, precision=0 if c.kind == "int" else None))
            else:
                inputs.append(gr.Textbox(str(value), label=c.name, info=c.help))
    return toggle, column, inputs


def _enabled(values: list) -> dict[str, bool]:
    """Whether each accelerator is on, by name, in flat control values."""
    return {name: bool(values[i]) for name, i in zip(CONTROL_LAYOUT, _toggle_positions())}


def _section_updates(values: list) -> list:
    """Open the groups holding an accelerator the values turn on (a group the visitor opened stays open)."""
    enabled = _enabled(values)
    return [
        gr.update(open=True) if any(enabled[name] for name in names) else gr.update()
        for names in CONTROL_GROUPS.values()
    ]


def _decoder_props(info: dict) -> dict:
    """The decoder choice for a model: light where it ships a light decoder, else disabled with the reason."""
    note = info["light_decoder_note"]
    if note:
        return dict(interactive=False, info=f"full only: {note} (so no live previews either)")
    return dict(
        interactive=True,
        info="full: the model's VAE; light: the light decoder it ships (faster, a little less faithful)",
    )


def _decoder_update(info: dict):
    props = _decoder_props(info)
    return gr.update(**props) if props["interactive"] else gr.update(value="full", **props)


def _toggle_positions() -> list[int]:
    positions, i = [], 0
    for controls in CONTROL_LAYOUT.values():
        positions.append(i)
        i += 1 + len(controls)
    return positions


def _family(info: dict):
    from genaccel.pipelines.families import FAMILIES

    return FAMILIES[info["family"]]


def _drop_unsupported(values: list, info: dict) -> list:
    values = list(values)
    for position, name in zip(_toggle_positions(), CONTROL_LAYOUT):
        if name in info["unsupported"]:
            values[position] = False
    return values


def _control_updates(values: list, info: dict) -> list:
    """Updates for every control (toggles get interactivity from support) then every parameter group."""
    updates, toggles = [], set(_toggle_positions())
    names = iter(CONTROL_LAYOUT)
    for i, value in enumerate(values):
        if i in toggles:
            name = next(names)
            updates.append(gr.update(value=value, interactive=name not in info["unsupported"]))
        else:
            updates.append(gr.update(value=value))
    groups = [gr.update(visible=bool(values[i])) for i in _toggle_positions()]
    return updates + groups


def _safe_spec(values: list) -> str:
    try:
        return spec_from_controls(values)
    except GenAccelError as exc:
        raise gr.Error(str(exc)) from None


def _support_text(info: dict) -> str:
    """The accelerators the model cannot run, once each with the reason (their toggles are disabled)."""
    if not info["unsupported"]:
        return f"Every accelerator works with {info['title']}."
    lines = "\n".join(f"- **{name}**: {why}" for name, why in info["unsupported"].items())
    return f"Not available for this model:\n{lines}"


def _request(
    prompt,
    negative,
    setting,
    width,
    height,
    frames,
    steps,
    guidance,
    seed,
    spec,
    offload=None,
    vae_tiling=None,
    attention=None,
    decoder=None,
) -> GenerationRequest:
    """The page's fields as a request (empty numbers mean the model's default); without a prompt, the
    base every batch item shares. The page always sends its Memory panel's values: the cached model
    is placed as it shows. The decoder is checked before the request is built: full or light, never a path."""
    options = {
        "prompt": prompt,
        "negative": negative or "",
        "setting": setting or "default",
        "width": _number(width),
        "height": _number(height),
        "frames": _number(frames),
        "steps": _number(steps),
        "guidance": _number(guidance),
        "seed": _number(seed) or 0,
        "accel": (spec or "none").strip() or "none",
        "offload": offload,
        "vae_tiling": None if vae_tiling is None else bool(vae_tiling),
        "attention": attention or "native",
        "decoder": check_decoder(decoder),
    }
    return request_from_options(options, partial=prompt is None)


def read_auth(pairs: str | Sequence[str] | None = None, path: str | Path | None = None) -> list[tuple[str, str]] | None:
    """(user, password) pairs for Gradio's login from "user:password" strings and/or a file of such lines
    (blank lines and # comments skipped; a password may hold ":"); None when neither is given. A
    malformed entry raises InputError naming it by position, never showing a password."""
    entries = [("auth", i + 1, text) for i, text in enumerate([pairs] if isinstance(pairs, str) else pairs or ())]
    if path is not None:
        try:
            lines = Path(path).expanduser().read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the auth file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        found = [
            (str(path), n, line.strip())
            for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not found:
            raise InputError(f"the auth file {path} has no user:password line")
        entries += found
    if not entries:
        return None
    credentials = []
    for source, number, text in entries:
        user, sep, password = str(text).partition(":")
        if not sep or not user.strip() or not password:
            raise InputError(f"{source} entry {number}: expected user:password")
        credentials.append((user.strip(), password))
    return credentials


def _served_elsewhere(output: Path) -> list[str]:
    """Folders Gradio would serve besides its temporary one and `allowed_paths`: its examples cache (under
    the working folder unless GRADIO_EXAMPLES_CACHE says otherwise), blocked unless it is in `output`."""
    from gradio.utils import get_cache_folder

    cache = Path(get_cache_folder()).resolve()
    return [] if cache.is_relative_to(output) else [str(cache)]


def _warn_if_open(host: str, share: bool, auth) -> None:
    if auth is None and (share or host not in ("127.0.0.1", "localhost", "::1")):
        where = "a public share link" if share else f"{host}"
        log.warning(
            "the UI is reachable through %s without a password: anyone who reaches it can generate (auth asks for one)",
            where,
        )


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    model: str | None = None,
    device: str = "auto",
    output_dir: str | None = None,
    share: bool = False,
    block: bool = True,
    *,
    models: Sequence[str] | None = None,
    auth: str | Sequence[str] | None = None,
    auth_file: str | None = None,
    queue_size: int | None = QUEUE_SIZE,
    max_size: int | None = 1280,
    max_frames: int | None = 257,
    max_steps: int | None = 100,
    max_batch: int | None = 32,
    max_prompt: int | None = 2000,
    max_chunks: int | None = 64,
    max_memory: str | None = None,
    keep_hours: float = 24.0,
):
    """Start the app (blocking unless `block=False`); returns the launched Blocks, its Studio as `.studio`.

    Listens on `host` (this machine only unless asked) and opens a share link only with `share`.
    `models`: the models a visitor may choose (default: `model` and the built-in ones); `auth`: one or
    more "user:password" strings, `auth_file`: a file of such lines; `queue_size`: generations that may
    wait for the device (None: no bound); `max_*`: the per-request limits of `UILimits`; `keep_hours`:
    age at which job folders are removed (0: kept forever). Raises InputError on a bad value. Over plain
    HTTP a password crosses the network readable: beyond a trusted network, serve the UI behind HTTPS.
    """
    import os

    if queue_size is not None and (isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1):
        raise InputError(f"--queue-size must be a whole number of at least 1; got {queue_size!r}")
    limits = UILimits(
        max_size=max_size,
        max_frames=max_frames,
        max_steps=max_steps,
        max_batch=max_batch,
        max_prompt=max_prompt,
        max_chunks=max_chunks,
        max_memory=max_memory,
    )
    credentials = read_auth(auth, auth_file)
    check_keep_hours(keep_hours)  # every setting is checked before the outputs folder is made
    output = Path(output_dir or tempfile.mkdtemp(prefix="genaccel-ui-")).resolve()
    studio = Studio(output, default_model=model, device=device, models=models, limits=limits, keep_hours=keep_hours)
    # Gradio's own copies of uploads and results stay inside the output folder too (read as the app is built).
    os.environ["GRADIO_TEMP_DIR"] = str(output / ".gradio")
    app = build_app(studio, queue_size)
    # api_open=False: no route runs a queued event around the queue (Gradio opens them off Spaces).
    app.queue(default_concurrency_limit=1, max_size=queue_size, api_open=False)
    app.studio = studio
    _warn_if_open(host, share, credentials)
    # run_history=False: the page's run history can upload runs to a Hugging Face bucket from this server.
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=credentials,
        allowed_paths=[str(output)],
        blocked_paths=_served_elsewhere(output),
        max_file_size=UPLOAD_LIMIT,
        run_history=False,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app
