"""Top-1 accuracy of float, simulated and LUT-kernel models on real test data."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .datasets import digits, fashion_mnist, watch_imu
from .errors import DataError, UnknownNameError

DATASETS = ("fashion-mnist", "watch-imu", "digits")


def load_split(name: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of a data set in the input convention of the shipped models: float32
    NCHW pixels / 255 for Fashion-MNIST, ``(N, 6, 128)`` standardized windows for the
    IMU data (:func:`tvmq.datasets.watch_imu`), ``(N, 1, 8, 8)`` / 16 for the digits;
    int64 labels."""
    if name == "fashion-mnist":
        x, y = fashion_mnist(split)
        return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)
    if name == "watch-imu":
        return watch_imu(split)
    if name == "digits":
        return digits(split)
    raise UnknownNameError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")


def calibration_set(name: str, n: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` training samples (never test data), each with a batch dimension of 1."""
    x, _ = load_split(name, "train")
    idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    return [x[i : i + 1] for i in idx]


def accuracy(
    run: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Top-1 accuracy (fraction) of ``run`` (one sample with batch dimension 1 -> logits)
    on ``x``/``y``; ``progress(k)`` is called after each ``k`` samples."""
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"need as many labels as samples (got {len(x)} and {len(y)})")
    correct = 0
    for i in range(len(x)):
        out = np.asarray(run(x[i : i + 1]))
        correct += int(out.reshape(-1).argmax() == y[i])
        if progress is not None:
            progress(1)
    return correct / len(x)


def standard_error(acc: float, n: int) -> float:
    """One binomial standard error of an accuracy measured on ``n`` samples."""
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / n))


def batches(x: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for i in range(0, len(x), size):
        yield x[i : i + size]
