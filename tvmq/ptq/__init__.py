"""Post-training quantization algorithms (:class:`tvmq.config.PTQConfig`), numpy only.

``inputs``: each layer's calibration rows (im2col patches) and exact mean row;
``layerwise``: output-optimal levels for fixed codes and GPTQ-style code assignment;
``bias``: the mean output shift of weight quantization; ``equalize``: cross-layer
equalization scales; ``mixed``: per-layer bit widths under a byte budget. The graph
passes that use them are in :mod:`relay_passes` (``equalize``, ``bias_correct``,
``annotate_quant``).
"""

from .layerwise import (
    code_column_sums,
    gptq_codes,
    output_error,
    quantized_input_target,
    refine_levels,
)

__all__ = [
    "code_column_sums",
    "gptq_codes",
    "output_error",
    "quantized_input_target",
    "refine_levels",
]
