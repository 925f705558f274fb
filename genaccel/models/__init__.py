"""What genaccel knows of a model before it runs: its files, its profile, its presets.

`facts` (ModelFacts: family, defaults, the profile read once per run, the presets of a setting),
`profiles` (calibrated profiles, read and written as TOML), `presets` (the family's and the tuned
presets), `files` (a model folder checked before diffusers reads it). No module here loads weights:
`genaccel.generation.load` does.
"""
