import numpy as np
import pytest

import tvmq
from tvmq.datasets import FASHION_MNIST_DIR, fashion_mnist

needs_fmnist = pytest.mark.skipif(
    not FASHION_MNIST_DIR.exists(), reason="Debian package dataset-fashion-mnist not installed"
)


@needs_fmnist
def test_fashion_mnist_contents():
    x, y = fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10  # balanced test set
    assert 60 < x.mean() < 90  # mostly dark background, real images


def test_missing_dataset_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("TVMQ_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(tvmq.DataError, match="dataset-fashion-mnist"):
        fashion_mnist("train")
    with pytest.raises(tvmq.DataError, match="split"):
        fashion_mnist("validation")


def test_corrupt_idx(monkeypatch, tmp_path):
    import gzip

    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03" + b"\x00" * 20)
    monkeypatch.setenv("TVMQ_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(tvmq.DataError):
        fashion_mnist("test")


def test_watch_imu_split_by_subject_and_standardized():
    from tvmq.datasets import WATCH_CLASSES, watch_imu

    xtr, ytr = watch_imu("train")
    xte, yte = watch_imu("test")
    assert xtr.shape[1:] == xte.shape[1:] == (6, 128) and xtr.dtype == np.float32
    assert len(xtr) == 5612 and len(xte) == 1529  # 8 subjects train, 2 held out
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(len(WATCH_CLASSES)))
    # the fixed standardization is the training subjects' own: near zero mean, unit scale
    flat = xtr.transpose(1, 0, 2).reshape(6, -1)
    assert np.all(np.abs(flat.mean(1)) < 0.1) and np.all(np.abs(flat.std(1) - 1) < 0.25)
    # no test window is a copy of a training window (different subjects)
    assert not np.isin(xte[:, 0, 0], xtr[:, 0, 0]).all()


def test_digits_split_is_stratified_and_fixed():
    from tvmq.datasets import digits

    xtr, _ = digits("train")
    xte, yte = digits("test")
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert 0 <= xtr.min() and xtr.max() <= 1
    assert np.all(np.abs(np.bincount(yte) - 45) <= 1)
    np.testing.assert_array_equal(digits("test")[0], xte)  # same split every time


def test_missing_python_package_names_what_to_install(monkeypatch):
    import importlib.util

    from tvmq.datasets import digits, watch_imu

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n in ("seglearn", "sklearn") else real(n, *a),
    )
    with pytest.raises(tvmq.DataError, match=r"seglearn==1\.2\.5"):
        watch_imu("test")
    with pytest.raises(tvmq.DataError, match="scikit-learn"):
        digits("train")
