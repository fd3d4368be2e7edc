"""Shared fixtures. Files from ``../shared/`` are optional: tests that need them skip."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models" / "mlperf_tiny"


@pytest.fixture(scope="session")
def mlperf_model():
    """Path of an MLPerf Tiny model in ../shared, or skip with the reason."""

    def get(name: str) -> Path:
        path = MODELS / name
        if not path.exists():
            pytest.skip(f"{path} is absent (shared/ is not next to the repo)")
        return path

    return get
