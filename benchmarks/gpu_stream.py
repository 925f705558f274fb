"""Frames per second of genaccel's streaming generator on a Wan2.1-1.3B-sized causal model (GPU check).

    python benchmarks/gpu_stream.py --out-dir DIR          # one CUDA GPU, about 3 minutes
    python benchmarks/gpu_stream.py --toy --out-dir DIR    # CPU, seconds: the same code at a toy size

Everything is genaccel's stream path (`genaccel.generation.stream.stream`: the kvcache accelerator behind
the attention seam, the commit pass, prompt projections once per prompt, chunk-wise VAE decoding): a
random-weight `WanTransformer3DModel` (Wan2.1-T2V-1.3B config) and a random-weight `AutoencoderKLWan`
(the Wan 2.1 VAE config), bf16, 480x832 (60x104 latents, 1,560 tokens per latent frame), a 512-token
prompt, chunks of 3 latent frames (12 video frames), 4 denoising steps per chunk without CFG (as the
distilled Self-Forcing / LongLive models run), then the commit pass. Cache configurations:

  selfforcing   window 18, sink 0: a 21-frame context with the chunk (Self-Forcing's attention span)
  longlive      window 9, sink 3: a 12-frame window with a 3-frame sink and the chunk (LongLive's)

Per chunk it records the seconds, the share spent decoding, the stream's state (KV cache, kept latents,
VAE feature cache) in bytes and the CUDA memory allocated; frames per second are the video frames of chunks 3..N over their seconds (warm-up excluded),
with and without VAE decoding. Anchors: Self-Forcing 17 FPS, LongLive 20.7 FPS on one H100.
Writes DIR/gpu_stream.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from gpu_wan_pass import TOY, WAN_1_3B, build_model  # noqa: E402

CONFIGS = {"selfforcing": (18, 0), "longlive": (9, 3)}


def build_pipeline(toy: bool, device: str, dtype):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    cfg = TOY if toy else WAN_1_3B
    transformer = build_model(cfg, device, dtype)
    with torch.device(device):
        vae = AutoencoderKLWan(base_dim=8 if toy else 96).eval()
    vae = vae.to(dtype)
    try:  # a tiny random UMT5 with the real text width; the prompt is 512 tokens as in Wan
        from transformers import UMT5Config, UMT5EncoderModel

        from genaccel.pipelines.tokenizer import build_word_tokenizer

        tokenizer = build_word_tokenizer(style="t5", model_max_length=512)
        torch.manual_seed(1)
        text_config = UMT5Config(
            vocab_size=len(tokenizer),
            d_model=cfg["text_dim"],
            d_kv=16,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            relative_attention_num_buckets=8,
        )
        with torch.device(device):
            text_encoder = UMT5EncoderModel(text_config).eval()
    except ImportError:  # no transformers on the machine: a fixed random prompt embedding stands in
        tokenizer = text_encoder = None
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    if text_encoder is None:
        embeds = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype)
        pipe.encode_prompt = lambda *args, **kwargs: (embeds, None)
    pipe.set_progress_bar_config(disable=True)
    height, width = (64, 96) if toy else (480, 832)
    pipe._genaccel_defaults = {
        "height": height,
        "width": width,
        "num_frames": 81,
        "num_inference_steps": 4,
        "guidance_scale": 1.0,
        "extra": {"max_sequence_length": 512},
    }
    pipe._genaccel_stream = {"chunk_frames": 3}
    pipe._genaccel_model_key = "wan2.1-1.3b-random"
    return pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    from genaccel.generation.stream import stream

    device = "cpu" if args.toy else "cuda"
    dtype = torch.float32 if args.toy else torch.bfloat16
    start = time.perf_counter()
    pipe = build_pipeline(args.toy, device, dtype)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "chunk_latent_frames": 3,
        "steps_per_chunk": 4,
        "guidance": 1.0,
        "build_seconds": round(time.perf_counter() - start, 1),
        "configs": {},
    }
    prompt = "a red circle moving left on a black background"
    for name, (window, sink) in CONFIGS.items():
        rows = []
        for chunk in stream(pipe, prompt, chunks=args.chunks, window=window, sink=sink, seed=0):
            allocated = torch.cuda.memory_allocated() if device == "cuda" else 0
            rows.append(
                {
                    "chunk": chunk.index,
                    "frames": len(chunk.frames),
                    "seconds": chunk.seconds,
                    "decode_seconds": chunk.decode_seconds,
                    "state_bytes": chunk.memory_bytes,
                    "cached_frames": len(chunk.cached_frames),
                    "cuda_allocated": allocated,
                }
            )
            print(json.dumps({"config": name, **rows[-1]}), flush=True)
        steady = rows[3:]
        frames = sum(r["frames"] for r in steady)
        seconds = sum(r["seconds"] for r in steady)
        denoise = sum(r["seconds"] - r["decode_seconds"] for r in steady)
        result["configs"][name] = {
            "window": window,
            "sink": sink,
            "fps": round(frames / seconds, 2),
            "fps_without_decode": round(frames / denoise, 2),
            "first_steady_chunk_seconds": round(steady[0]["seconds"], 4),
            "last_chunk_seconds": round(rows[-1]["seconds"], 4),
            "state_bytes_last": rows[-1]["state_bytes"],
            "cuda_allocated_last": rows[-1]["cuda_allocated"],
            "chunks": rows,
        }
        if device == "cuda":
            result["configs"][name]["cuda_peak"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "gpu_stream.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['device']}, 480x832, chunks of 3 latent frames (12 video frames), 4 steps, no CFG\n")
    print("| cache | FPS | FPS without VAE decode | chunk 3 s | last chunk s | stream state MB |")
    print("|---|---|---|---|---|---|")
    for name, r in result["configs"].items():
        print(
            f"| {name} (window {r['window']}, sink {r['sink']}) | {r['fps']} | {r['fps_without_decode']} | "
            f"{r['first_steady_chunk_seconds']} | {r['last_chunk_seconds']} | {r['state_bytes_last'] / 1e6:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
