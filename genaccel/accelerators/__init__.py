"""The accelerator registry: one module per technique, listed here by spec name."""

from genaccel.accelerators.base import Accelerator, AcceleratorConfig
from genaccel.accelerators.cfg_cache import CFGCache
from genaccel.accelerators.faster_cache import FasterCache
from genaccel.accelerators.first_block_cache import FirstBlockCache
from genaccel.accelerators.magcache import MagCache
from genaccel.accelerators.pyramid_broadcast import PyramidAttentionBroadcast
from genaccel.accelerators.taylorseer import TaylorSeer
from genaccel.accelerators.teacache import TeaCache

ACCELERATORS: dict[str, type[Accelerator]] = {
    cls.name: cls for cls in (TeaCache, FirstBlockCache, MagCache, PyramidAttentionBroadcast, FasterCache, TaylorSeer, CFGCache)
}

__all__ = ["ACCELERATORS", "Accelerator", "AcceleratorConfig"]
