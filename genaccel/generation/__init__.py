"""The request path: from a request to frames, walked once, top to bottom.

`request` (GenerationRequest, the one vocabulary of every entry point) -> `spec` (accelerator specs parsed
and resolved against the model) -> `prepare` (the request completed and checked against `ModelFacts`,
once) -> `load` (the pipeline) -> `generate` / `stream` (the run, through `genaccel.engine`); `batch`
runs many requests, resumably. Entry points (`genaccel.cli`, `genaccel.ui`, `genaccel.tools`) sit above.
"""
