"""genaccel: training-free acceleration of diffusers text-to-video pipelines.

    import genaccel
    pipe = genaccel.load_pipeline("tiny-wan")              # or a local folder / hub id
    genaccel.apply(pipe, "teacache(threshold=0.1)+pab")    # or a preset: "balanced"
    result = genaccel.generate(pipe, "a red circle moving left on a black background", seed=0)
    genaccel.write_video(result.frames, "clip.mp4")
    genaccel.remove(pipe)

A causal model streams: `for chunk in genaccel.stream(genaccel.load_pipeline("tiny-causal"), prompt,
chunks=20): ...` (see genaccel.streaming).

A request travels one path: `request_from_options` (or `GenerationRequest(...)`) -> `prepare(pipe,
request)` (spec resolved for the model, defaults filled, checked once) -> `generate(pipe, prepared)`.
"""

from genaccel.acceleration import Acceleration, acceleration_of, apply, remove
from genaccel.errors import GenAccelError, InputError, ModelError, SpecError
from genaccel.generate import GenerationResult, generate
from genaccel.models import load_pipeline
from genaccel.prepare import PreparedRequest, prepare
from genaccel.request import GenerationRequest, request_from_options
from genaccel.streaming.generator import Stream, StreamChunk, prepare_stream, stream
from genaccel.video_io import write_video

__version__ = "0.1.0"

__all__ = [
    "Acceleration",
    "GenAccelError",
    "GenerationRequest",
    "GenerationResult",
    "InputError",
    "ModelError",
    "PreparedRequest",
    "SpecError",
    "Stream",
    "StreamChunk",
    "acceleration_of",
    "apply",
    "generate",
    "load_pipeline",
    "prepare",
    "prepare_stream",
    "remove",
    "request_from_options",
    "stream",
    "write_video",
]
