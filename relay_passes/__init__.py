"""tvmq's graph passes. Despite the folder name these are Relax passes (TVM 0.27 replaced
Relay with Relax); see README.md in this folder."""

from .annotate_quant import AnnotateQuant, LayerReport, WeightSite, find_weight_sites
from .calibrate import Calibrate
from .legalize_lut import LegalizeLUT
from .simulate_quant import SimulateQuant

__all__ = [
    "AnnotateQuant",
    "Calibrate",
    "LayerReport",
    "LegalizeLUT",
    "SimulateQuant",
    "WeightSite",
    "find_weight_sites",
]
