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

from genaccel import _quiet  # noqa: F401 - first: quiets optional dependencies' import-time warnings
from genaccel.engine.acceleration import Acceleration, acceleration_of, remove
from genaccel.errors import GenAccelError, InputError, ModelError, SpecError
from genaccel.generation.generate import GenerationResult, generate
from genaccel.generation.load import load_pipeline
from genaccel.generation.prepare import PreparedRequest, apply, prepare
from genaccel.generation.request import GenerationRequest, request_from_options
from genaccel.generation.stream import Stream, StreamChunk, prepare_stream, stream
from genaccel.io.video import write_video

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
