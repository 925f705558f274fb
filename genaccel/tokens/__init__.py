"""Token reduction: merge redundant video tokens and restore them afterwards (`matching` is the math,
`reduce` the AsymRnR attention kernel, `tome` the ToMe hooks around a block's modules)."""

from .matching import TokenMatch, cell_of, cell_partition, match, merge, unmerge

__all__ = ["TokenMatch", "cell_of", "cell_partition", "match", "merge", "unmerge"]
