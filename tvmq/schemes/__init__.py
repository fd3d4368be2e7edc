"""Quantization schemes: each a dataclass config registered by name.

Importing this package registers the built-in schemes: ``uniform``, ``quantile``,
``kmeans``, ``tfx``, ``pot``, ``nf`` and ``fixed`` (Qm.n fixed point). Register your own
with :func:`register_scheme`.
"""

from .base import (
    GroupFit,
    SchemeConfig,
    finalize_levels,
    fit,
    get_scheme,
    list_schemes,
    make_config,
    register_scheme,
)
from .fixed import FixedPointConfig
from .kmeans import KMeansConfig
from .nf import NFConfig
from .pot import PoTConfig
from .quantile import QuantileConfig
from .tfx import TFXConfig, tfx_codebook, tfx_decode, tfx_encode, tfx_levels, tfx_select
from .uniform import UniformConfig

__all__ = [
    "FixedPointConfig",
    "GroupFit",
    "KMeansConfig",
    "NFConfig",
    "PoTConfig",
    "QuantileConfig",
    "SchemeConfig",
    "TFXConfig",
    "UniformConfig",
    "finalize_levels",
    "fit",
    "get_scheme",
    "list_schemes",
    "make_config",
    "register_scheme",
    "tfx_codebook",
    "tfx_decode",
    "tfx_encode",
    "tfx_levels",
    "tfx_select",
]
