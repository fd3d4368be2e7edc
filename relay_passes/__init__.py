"""tvmq's graph passes. Despite the folder name these are Relax passes (TVM 0.27 replaced
Relay with Relax); see README.md in this folder."""

from .annotate_quant import (
    AnnotateQuant,
    LayerReport,
    WeightSite,
    annotate_quant,
    find_weight_sites,
)
from .calibrate import Calibrate, calibrate
from .legalize_lut import LegalizeLUT
from .simulate_quant import SimulateQuant

__all__ = [
    "AnnotateQuant",
    "Calibrate",
    "LayerReport",
    "LegalizeLUT",
    "SimulateQuant",
    "WeightSite",
    "annotate_quant",
    "calibrate",
    "find_weight_sites",
]
