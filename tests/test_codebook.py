import json

import numpy as np
import pytest

import tvmq
from tvmq.codebook import Codebook


def test_nearest_level_with_ties_to_lower_code():
    cb = Codebook(bits=2, levels=[-1.0, 0.0, 1.0, 2.0])
    x = np.array([-5.0, -0.5, -0.49, 0.5, 1.5, 1.6, 9.0])
    assert cb.encode(x).tolist() == [0, 0, 1, 1, 2, 3, 3]
    np.testing.assert_array_equal(cb.decode(cb.encode(x)), [-1, -1, 0, 0, 1, 2, 2])


def test_ties_to_even_code():
    cb = Codebook(bits=2, levels=[-1.0, 0.0, 1.0, 2.0], tie="even")
    assert cb.encode(np.array([-0.5, 0.5, 1.5])).tolist() == [0, 2, 2]


def test_custom_thresholds_and_padding():
    cb = Codebook(bits=2, levels=[[0.0, 1.0, 1.0, 1.0]])
    # Padding repeats get +inf thresholds: encoding never returns a padding code.
    assert cb.encode(np.array([0.2, 0.9, 100.0])).tolist() == [0, 1, 1]
    cb = Codebook(bits=2, levels=[0.0, 1.0], thresholds=[[0.9]])
    assert cb.encode(np.array([0.8, 0.9, 0.95])).tolist() == [0, 0, 1]


def test_per_channel_and_per_group_layout():
    w = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    cb = tvmq.fit(w, "kmeans", bits=3, axis=1)
    assert cb.n_groups == 3 and cb.granularity == "channel"
    # 8 distinct values per channel, 8 levels: lossless only if grouping is right.
    np.testing.assert_array_equal(cb.quantize(w), w)
    cb = tvmq.fit(w, "kmeans", bits=2, axis=0, group_size=4)
    assert cb.n_groups == 2 * 3 and cb.granularity == "group"
    # Each group of 4 distinct values gets 4 levels: lossless.
    np.testing.assert_array_equal(cb.quantize(w), w)
    with pytest.raises(tvmq.DataError, match="not divisible by group_size 5"):
        tvmq.fit(w, "kmeans", bits=2, axis=0, group_size=5)
    with pytest.raises(tvmq.DataError, match="groups"):
        cb.encode(np.zeros((3, 3, 4)))


def test_serialization_round_trip_exact():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 32)).astype(np.float32)
    for scheme in tvmq.list_schemes():
        cb = tvmq.fit(w, scheme, bits=3, axis=0)
        d = json.loads(json.dumps(cb.to_dict()))
        cb2 = Codebook.from_dict(d)
        np.testing.assert_array_equal(cb2.levels, cb.levels)
        np.testing.assert_array_equal(cb2.thresholds, cb.thresholds)
        np.testing.assert_array_equal(cb2.encode(w), cb.encode(w))
        assert (cb2.scheme, cb2.axis, cb2.tie, cb2.bits) == (scheme, 0, cb.tie, 3)


def test_newer_or_foreign_dict_is_refused():
    d = tvmq.fit(np.arange(10.0), "uniform", bits=2).to_dict()
    with pytest.raises(tvmq.FormatError, match="newer"):
        Codebook.from_dict({**d, "version": 99})
    with pytest.raises(tvmq.FormatError):
        Codebook.from_dict({"format": "something else"})
    with pytest.raises(tvmq.FormatError):
        Codebook.from_dict({**d, "levels": [[2.0, 1.0]]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 2, "levels": [0, 1, 2, 3, 4]}, "do not fit in 2-bit"),
        ({"bits": 2, "levels": [1.0, 0.0]}, "sorted"),
        ({"bits": 2, "levels": [0.0, 0.0, 1.0]}, "repeat in the middle"),
        ({"bits": 2, "levels": [0.0, np.nan]}, "NaN"),
        ({"bits": 2, "levels": [0.0, 1.0], "tie": "up"}, "tie"),
    ],
)
def test_invalid_codebooks(kwargs, match):
    with pytest.raises(tvmq.DataError, match=match):
        Codebook(**kwargs)


def test_storage_accounting():
    w = np.random.default_rng(0).normal(size=(16, 100))
    cb = tvmq.fit(w, "kmeans", bits=4, axis=0)
    size = cb.storage_bytes(w.size)
    assert size["codes"] == 800 and size["codebook"] == 16 * 16 * 4
    assert size["total"] == 800 + 1024
    assert size["bits_per_weight"] == pytest.approx(8 * 1824 / 1600)
    assert cb.storage_bytes(w.size, level_bytes=2)["codebook"] == 512
    # Parametric schemes pay for their parameters, not a level table (unless asked).
    un = tvmq.fit(w, "uniform", bits=4, axis=0)
    assert un.storage_bytes(w.size)["codebook"] == 16 * 4
    assert un.storage_bytes(w.size, tables=True)["codebook"] == 16 * 16 * 4
    assert tvmq.fit(w, "tfx", bits=4, axis=0).storage_bytes(w.size)["codebook"] == 16 * 2


def test_metrics():
    x = np.array([1.0, -1.0, 2.0])
    assert tvmq.sqnr_db(x, x) == float("inf")
    assert tvmq.sqnr_db(x, x * 0.9) == pytest.approx(20.0)
    assert tvmq.mse(x, x + 1) == 1.0
    with pytest.raises(tvmq.DataError):
        tvmq.mse(x, x[:2])
