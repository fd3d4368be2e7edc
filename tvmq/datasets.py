"""Real data sets, read offline from system packages.

``fashion_mnist`` reads the IDX files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``; override with ``TVMQ_FASHION_MNIST_DIR``). The
Debian ``.gz`` files are recompressed, so their checksums differ from upstream's list; the
decompressed contents are what is checked (magic numbers, sizes, and a label histogram).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_SPLITS = {"train": ("train", 60000), "test": ("t10k", 10000)}


def _read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    head = np.frombuffer(data[:4], dtype=">u4")[0]
    if head != magic:
        raise DataError(f"{path}: bad IDX magic {head:#x}, expected {magic:#x}")
    ndim = magic & 0xFF
    dims = np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    if dims[0] != count:
        raise DataError(f"{path}: {dims[0]} items, expected {count}")
    body = np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


def fashion_mnist(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels.

    Parameters
    ----------
    split : {"train", "test"}

    Returns
    -------
    images : np.ndarray
        ``(N, 28, 28)`` uint8 (N = 60000 for train, 10000 for test).
    labels : np.ndarray
        ``(N,)`` uint8 class indices, see :data:`FASHION_MNIST_CLASSES`.

    Raises
    ------
    DataError
        The files are missing (install the Debian package ``dataset-fashion-mnist``) or corrupt.
    """
    if split not in _SPLITS:
        raise DataError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    root = Path(os.environ.get("TVMQ_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    prefix, count = _SPLITS[split]
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (images_path, labels_path):
        if not p.exists():
            raise DataError(
                f"Fashion-MNIST file {p} not found: install the Debian package "
                "'dataset-fashion-mnist' (make setup does) or set TVMQ_FASHION_MNIST_DIR"
            )
    images = _read_idx(images_path, 0x0803, count)
    labels = _read_idx(labels_path, 0x0801, count)
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0..9")
    return images, labels
