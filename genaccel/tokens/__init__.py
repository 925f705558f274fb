"""Token reduction: merge redundant video tokens and restore them afterwards (`matching` is the math)."""

from .matching import TokenMatch, cell_partition, match, merge, unmerge

__all__ = ["TokenMatch", "cell_partition", "match", "merge", "unmerge"]
