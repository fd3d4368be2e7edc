"""Real data sets, read offline from system and Python packages (no network at run time).

``watch_imu`` reads the wrist-IMU recordings that the PyPI package ``seglearn`` ships
(``seglearn/data/watch_dataset.npy``) and ``digits`` scikit-learn's bundled 8x8 digits;
both come with tvmq's ``data`` extra (``make setup`` installs it). Each loader names the
package to install when its files are missing.

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


# --- wrist IMU exercises (seglearn's watch data set, a stand-in for UCI-HAR) -------------

WATCH_CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
WATCH_TEST_SUBJECTS = (9, 10)  # held out whole: no window of a test subject is trained on
WATCH_WINDOW = 128  # samples at 50 Hz (2.56 s, as UCI-HAR)
WATCH_STRIDE = {"train": 32, "test": 32}
# per-channel mean / std of the 8 training subjects' raw samples (3-axis accelerometer in
# g, 3-axis gyroscope in rad/s); fixed so the shipped model's input convention is too
WATCH_MEAN = (-0.0093, 0.3754, -0.1382, 0.0217, -0.0038, 0.0125)
WATCH_STD = (0.9308, 0.4984, 0.5506, 1.0157, 2.5553, 1.0879)


def _package_file(package: str, rel: str, install: str) -> Path:
    """A data file shipped inside an installed Python package, found without importing it
    (seglearn and scikit-learn take seconds to import)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the Python package {package!r} is not installed: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise DataError(f"{path} not found: the installed {package!r} lacks it; {install}")
    return path


def watch_imu(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Wrist-worn 6-axis IMU recordings of 7 shoulder exercises (seglearn's watch data).

    140 recordings (10 subjects x 7 exercises x 2 sides, 50 Hz) cut into windows of
    :data:`WATCH_WINDOW` samples with :data:`WATCH_STRIDE`; subjects
    :data:`WATCH_TEST_SUBJECTS` form the test split. Test windows overlap by 75 %, so
    they are not independent samples (a binomial standard error on them is optimistic).

    Returns
    -------
    x : np.ndarray
        ``(N, 6, 128)`` float32, channels standardized with :data:`WATCH_MEAN` /
        :data:`WATCH_STD` (accelerometer x, y, z, gyroscope x, y, z).
    y : np.ndarray
        ``(N,)`` int64 class indices, see :data:`WATCH_CLASSES`.

    Raises
    ------
    DataError
        seglearn is not installed (``pip install seglearn==1.2.5``, the ``data`` extra) or
        its file is not what is expected.
    """
    if split not in _SPLITS:
        raise DataError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    path = _package_file(
        "seglearn", "data/watch_dataset.npy", "pip install 'seglearn==1.2.5' (tvmq's data extra)"
    )
    # the file is a pickled dict of arrays and lists (that is how seglearn ships it)
    data = np.load(path, allow_pickle=True).item()
    series, labels, subjects = data.get("X"), data.get("y"), data.get("subject")
    if series is None or labels is None or subjects is None or len(series) != 140:
        raise DataError(f"{path}: expected 140 recordings with labels and subjects")
    mean = np.asarray(WATCH_MEAN, np.float32)
    std = np.asarray(WATCH_STD, np.float32)
    test = split == "test"
    stride = WATCH_STRIDE[split]
    xs, ys = [], []
    for s, label, subject in zip(series, labels, subjects, strict=True):
        if (int(subject) in WATCH_TEST_SUBJECTS) != test:
            continue
        s = ((np.asarray(s, np.float32) - mean) / std).T  # (6, T)
        if s.shape[0] != 6:
            raise DataError(f"{path}: a recording has {s.shape[0]} channels, expected 6")
        for t in range(0, s.shape[1] - WATCH_WINDOW + 1, stride):
            xs.append(s[:, t : t + WATCH_WINDOW])
            ys.append(int(label))
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)


# --- scikit-learn's bundled 8x8 handwritten digits ---------------------------------------

DIGITS_TEST_FRACTION = 0.25


def digits(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (UCI optdigits test set).

    Read from scikit-learn's ``datasets/data/digits.csv.gz`` without importing it; a fixed
    stratified split puts 25 % of each class into the test split.

    Returns
    -------
    x : np.ndarray
        ``(N, 1, 8, 8)`` float32, pixel counts 0..16 divided by 16.
    y : np.ndarray
        ``(N,)`` int64 digits.
    """
    if split not in _SPLITS:
        raise DataError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    path = _package_file(
        "sklearn", "datasets/data/digits.csv.gz", "pip install scikit-learn (tvmq's data extra)"
    )
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table[:, :64].max() > 16 or table[:, 64].max() > 9:
        raise DataError(f"{path}: expected 1797 rows of 64 pixels (0..16) and a digit")
    y = table[:, 64]
    rng = np.random.default_rng(0)
    is_test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        is_test[rng.choice(idx, round(DIGITS_TEST_FRACTION * len(idx)), replace=False)] = True
    keep = is_test if split == "test" else ~is_test
    x = (table[keep, :64].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, y[keep]
