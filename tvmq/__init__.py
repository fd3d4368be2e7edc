"""tvmq: non-linear (codebook / lookup-table) quantization for tinyML on Apache TVM.

The public surface is small: fit a :class:`Codebook` to a tensor with :func:`fit`, pack its
codes with :func:`pack`, measure with :func:`sqnr_db`. Everything tvmq raises on purpose is
a :class:`TvmqError`.
"""

from ._version import __version__
from .codebook import Codebook
from .errors import ConfigError, DataError, FormatError, TvmqError, UnknownNameError
from .metrics import mse, sqnr_db
from .packing import pack, unpack
from .schemes import SchemeConfig, fit, get_scheme, list_schemes, register_scheme

__all__ = [
    "Codebook",
    "ConfigError",
    "DataError",
    "FormatError",
    "SchemeConfig",
    "TvmqError",
    "UnknownNameError",
    "__version__",
    "fit",
    "get_scheme",
    "list_schemes",
    "mse",
    "pack",
    "register_scheme",
    "sqnr_db",
    "unpack",
]
