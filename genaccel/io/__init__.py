"""Files genaccel writes: `video` (mp4/gif/webp/frame folders), `files` (crash-safe atomic writes,
append-only logs, resumable plans), `failpoints` (named kill points for the crash tests)."""
