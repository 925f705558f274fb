"""Tools beside generation, used by the CLI and the UI: `bench` (speedup against quality), `calibrate`
and `calibrate_schedule` (a model's profile), `tune` (presets from measurements), `catalog` (what
`genaccel list` shows), `convert_causal` (a causal checkpoint into a streaming model folder),
`reference` (the command reference in docs/)."""
