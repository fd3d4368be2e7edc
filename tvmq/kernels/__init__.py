"""LUT kernels: TE compute definitions that read packed weight codes and look up levels.

Each kernel is a small unit: a compute definition (``*_compute``), no hand schedule yet
(MetaSchedule tunes them), and a numpy reference (``*_reference``) the tests compare to.
Codes are read in the :mod:`tvmq.packing` layout, so the float weight tensor is never
materialized by the fused kernels; :func:`lut_decode_compute` (which does materialize it)
exists only as the fallback legalization of the ``quant.lut_decode`` op.
"""

from .activation import (
    SNAP_SIZE,
    code_range,
    dequantize_compute,
    dequantize_reference,
    fit_levels,
    qrange,
    quantize_compute,
    quantize_reference,
    snap_expr,
    snap_table,
)
from .conv import lut_conv_compute, lut_conv_reference
from .decode import LutWeight, lut_decode_compute, lut_decode_reference
from .integer import (
    INPLACE_ATTR,
    UNSIGNED_OFFSET,
    ZP_FOLDED,
    int_level_table,
    lut_conv_int_avgpool_compute,
    lut_conv_int_compute,
    lut_int_reference,
    lut_matmul_int_compute,
    out_scales,
    shared_table,
    snap_levels,
    supports_integer,
    zero_point_sums,
)
from .matmul import lut_matmul_compute, lut_matmul_reference
from .requantize import (
    kernel_requant,
    quantize_multiplier,
    requantize_reference,
    residual_multiplier,
    residual_reference,
)

__all__ = [
    "INPLACE_ATTR",
    "SNAP_SIZE",
    "UNSIGNED_OFFSET",
    "ZP_FOLDED",
    "LutWeight",
    "code_range",
    "dequantize_compute",
    "dequantize_reference",
    "fit_levels",
    "int_level_table",
    "kernel_requant",
    "lut_conv_compute",
    "lut_conv_int_avgpool_compute",
    "lut_conv_int_compute",
    "lut_conv_reference",
    "lut_decode_compute",
    "lut_decode_reference",
    "lut_int_reference",
    "lut_matmul_compute",
    "lut_matmul_int_compute",
    "lut_matmul_reference",
    "out_scales",
    "qrange",
    "quantize_compute",
    "quantize_multiplier",
    "quantize_reference",
    "requantize_reference",
    "residual_multiplier",
    "residual_reference",
    "shared_table",
    "snap_expr",
    "snap_levels",
    "snap_table",
    "supports_integer",
    "zero_point_sums",
]
