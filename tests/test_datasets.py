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
