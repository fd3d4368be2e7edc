"""tvmq: non-linear (codebook / lookup-table) quantization for tinyML on Apache TVM.

The public surface is small: fit a :class:`Codebook` to a tensor with :func:`fit`, pack its
codes with :func:`pack`, measure with :func:`sqnr_db`. Everything tvmq raises on purpose is
a :class:`TvmqError`. The compiler entry points (:func:`quantize`, :func:`load_model`,
:class:`QuantConfig`) import TVM, so they load on first use.
"""

from ._version import __version__
from .codebook import Codebook
from .errors import ConfigError, DataError, FormatError, TvmqError, UnknownNameError
from .metrics import mse, sqnr_db
from .packing import pack, unpack
from .schemes import SchemeConfig, fit, get_scheme, list_schemes, register_scheme

# The implementation lives in ``tvmq.quantizer``: a submodule named ``quantize`` would
# replace the function ``tvmq.quantize`` with itself when imported directly.
_LAZY = {
    "quantize": ("tvmq.quantizer", "quantize"),
    "QuantizedModel": ("tvmq.quantizer", "QuantizedModel"),
    "load_model": ("tvmq.frontend.load", "load_model"),
    "ModelImportError": ("tvmq.frontend.load", "ModelImportError"),
    "QuantConfig": ("tvmq.config", "QuantConfig"),
    "load_artifact": ("tvmq.artifact", "load"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tvmq' has no attribute {name!r}")


__all__ = [
    "Codebook",
    "ConfigError",
    "DataError",
    "FormatError",
    "ModelImportError",
    "QuantConfig",
    "QuantizedModel",
    "SchemeConfig",
    "TvmqError",
    "UnknownNameError",
    "__version__",
    "fit",
    "get_scheme",
    "list_schemes",
    "load_artifact",
    "load_model",
    "mse",
    "pack",
    "quantize",
    "register_scheme",
    "sqnr_db",
    "unpack",
]
