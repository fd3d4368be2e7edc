"""Post-training quantization steps that use calibration data (:class:`tvmq.config.PTQConfig`)."""

from .layerwise import code_column_sums, gptq_codes, output_error, refine_levels

__all__ = ["code_column_sums", "gptq_codes", "output_error", "refine_levels"]
