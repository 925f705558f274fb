"""The accelerator registry: one module per technique, listed here by spec name."""

from genaccel.accelerators.asymrnr import AsymRnR
from genaccel.accelerators.base import Accelerator, AcceleratorConfig
from genaccel.accelerators.cfgcache import CFGCache
from genaccel.accelerators.compilation import Compile
from genaccel.accelerators.fastercache import FasterCache
from genaccel.accelerators.fbcache import FirstBlockCache
from genaccel.accelerators.kvcache import KVCache
from genaccel.accelerators.lightcache import LightCache
from genaccel.accelerators.magcache import MagCache
from genaccel.accelerators.pab import PyramidAttentionBroadcast
from genaccel.accelerators.quant import Quant
from genaccel.accelerators.radial import RadialAttention
from genaccel.accelerators.schedule import Schedule
from genaccel.accelerators.sta import SlidingTileAttention
from genaccel.accelerators.svg import SparseVideoGen
from genaccel.accelerators.taylorseer import TaylorSeer
from genaccel.accelerators.teacache import TeaCache
from genaccel.accelerators.tome import ToMe
from genaccel.accelerators.topk import TopKAttention

ACCELERATORS: dict[str, type[Accelerator]] = {
    cls.name: cls
    for cls in (
        TeaCache,
        FirstBlockCache,
        MagCache,
        Schedule,
        PyramidAttentionBroadcast,
        FasterCache,
        TaylorSeer,
        CFGCache,
        SparseVideoGen,
        RadialAttention,
        SlidingTileAttention,
        TopKAttention,
        AsymRnR,
        ToMe,
        KVCache,
        LightCache,
        Compile,
        Quant,
    )
}


def unsupported_reason(accel: str | type[Accelerator], family) -> str | None:
    """Why accelerator `accel` (spec name or class) cannot run on `family`; None if it can."""
    cls = ACCELERATORS[accel] if isinstance(accel, str) else accel
    return cls.unsupported_reason(family)


def unsupported_by(family) -> dict[str, str]:
    """The accelerators that cannot run on `family`, by spec name, with the reason shown to users."""
    return {name: reason for name, cls in ACCELERATORS.items() if (reason := cls.unsupported_reason(family))}


__all__ = ["ACCELERATORS", "Accelerator", "AcceleratorConfig", "unsupported_by", "unsupported_reason"]
