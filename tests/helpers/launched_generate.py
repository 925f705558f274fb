"""`genaccel generate` run by `accelerate launch` in tests/test_context_parallel.py, on CPU processes.

diffusers 0.42 picks each process's device as `rank % torch.accelerator.device_count()`, which is a
division by zero on a machine without an accelerator; the count is 1 here so that the CPU runs it.
"""

import sys

import torch

from genaccel.cli import main

torch.accelerator.device_count = lambda: 1
sys.exit(main(["generate", *sys.argv[1:]]))
