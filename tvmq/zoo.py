"""Models the repository ships (``models/``): trained by ``scripts/train_models.py``.

Each model is an ONNX file with a JSON file beside it recording its data set, input
convention and float accuracy on the full test set (see the training script).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UnknownNameError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.onnx") if p.with_suffix(".json").exists())


def model_path(name: str) -> Path:
    """Path of the ONNX file of model ``name``."""
    path = MODELS_DIR / f"{name}.onnx"
    if not path.exists():
        known = ", ".join(available()) or "none"
        raise UnknownNameError(f"no shipped model {name!r} in {MODELS_DIR}; available: {known}")
    return path


def info(name: str) -> dict:
    """The model's metadata (data set, input shape, float accuracy, training settings)."""
    return json.loads(model_path(name).with_suffix(".json").read_text())
