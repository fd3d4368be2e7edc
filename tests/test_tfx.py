"""Tapered fixed point against the TENT paper (seed 002)."""

import numpy as np
import pytest

import tvmq
from tvmq.schemes import tfx_codebook, tfx_decode, tfx_encode, tfx_levels, tfx_select


def test_paper_example_3_875_in_tfx_8_8_0():
    assert tfx_encode(np.array([3.875]), n=8, IS=8, SC=0).tolist() == [0b11110111]
    assert tfx_decode(np.array([0b11110111]), n=8, IS=8, SC=0).tolist() == [3.875]


def test_field_layout_by_hand():
    # TFX(5, 3, 0): 10xxx -> I=0, 3 fraction bits; 110xx -> I=1, 2 bits; 111xx -> IS cap, I=2.
    dec = lambda p: float(tfx_decode(np.array([p]), n=5, IS=3, SC=0)[0])  # noqa: E731
    assert dec(0b10101) == 0 + 5 / 8
    assert dec(0b11001) == 1 + 1 / 4
    assert dec(0b11111) == 2 + 3 / 4
    assert dec(0b01000) == -1 + 0 / 8  # run of one 0, terminator, fraction 000
    assert dec(0b00100) == -2 + 0 / 4
    assert dec(0b00000) == -3
    # SC scales by 2**SC.
    assert float(tfx_decode(np.array([0b11111]), n=5, IS=3, SC=-2)[0]) == 2.75 / 4


def test_is_1_is_plain_fixed_point():
    for n in range(2, 9):
        lv = tfx_levels(n=n, IS=1, SC=0)
        np.testing.assert_array_equal(lv, np.arange(-(1 << (n - 1)), 1 << (n - 1)) / (1 << (n - 1)))


def test_dynamic_range_matches_paper_eq_1():
    # n=5, SC=0: IS=1 spans [1/16 .. ~1], IS=2 [1/8 .. ~2], IS=5 max magnitude 5 (eq. 1).
    for IS, min_pos, max_abs in [(1, 1 / 16, 1.0), (2, 1 / 8, 2.0), (5, 1 / 8, 5.0)]:
        lv = tfx_levels(n=5, IS=IS, SC=0)
        assert lv[lv > 0].min() == min_pos
        assert np.abs(lv).max() == max_abs


@pytest.mark.parametrize("n", range(2, 9))
def test_every_representable_value_round_trips(n):
    for IS in range(1, n + 1):
        for SC in range(-4, 4):
            lv = tfx_levels(n=n, IS=IS, SC=SC)
            assert np.all(np.diff(lv) > 0), "patterns read unsigned are ordered by value"
            codes = tfx_encode(lv, n=n, IS=IS, SC=SC)
            np.testing.assert_array_equal(codes, np.arange(1 << n))
            np.testing.assert_array_equal(tfx_decode(codes, n=n, IS=IS, SC=SC), lv)


def test_round_to_nearest_even_and_clipping():
    lv = tfx_levels(n=4, IS=1, SC=0)  # fixed point, step 1/8, codes 0..15 <-> -1 .. 7/8
    mid = (lv[4] + lv[5]) / 2  # tie between codes 4 and 5 -> even (4)
    mid2 = (lv[5] + lv[6]) / 2  # tie between 5 and 6 -> 6
    assert tfx_encode(np.array([mid, mid2, 100.0, -100.0]), n=4, IS=1, SC=0).tolist() == [
        4,
        6,
        15,
        0,
    ]


def test_algorithm_1():
    assert tfx_select(0.74, 8) == (1, 0)  # Fashion-MNIST ConvNet weight range, Table 1
    assert tfx_select(0.3, 8) == (1, -1)  # max|w| < 0.5: SC = floor(log2 0.3) + 1
    assert tfx_select(2.12, 8) == (3, 0)  # CIFAR-10 ResNet-18 weights
    assert tfx_select(10.21, 8) == (8, 0)  # activations beyond n: IS = n


def test_denormal_weights_keep_sc_in_its_7_bits():
    """Found by hypothesis: a group whose largest weight is 1e-45 gave SC = -148."""
    assert tfx_select(1e-45, 2) == (1, -64)
    x = np.array([1e-45, -1e-45], np.float32)
    for select in ("algorithm1", "mse"):
        cb = tvmq.fit(x, "tfx", bits=2, select=select)
        assert np.all(np.isfinite(cb.decode(cb.encode(x))))


def test_tfx_scheme_uses_algorithm_1_or_mse_search():
    w = np.random.default_rng(0).laplace(scale=0.05, size=4096)
    a1 = tvmq.fit(w, "tfx", bits=5)
    assert a1.meta["groups"][0] == dict(zip(("IS", "SC"), tfx_select(np.abs(w).max(), 5)))
    assert a1.tie == "even"
    ms = tvmq.fit(w, "tfx", bits=5, select="mse")
    assert tvmq.mse(w, ms.quantize(w)) <= tvmq.mse(w, a1.quantize(w))
    fixed = tvmq.fit(w, "tfx", bits=5, IS=2, SC=-3)
    np.testing.assert_array_equal(fixed.levels[0], tfx_levels(n=5, IS=2, SC=-3))
    np.testing.assert_array_equal(fixed.encode(w), tfx_codebook(n=5, IS=2, SC=-3).encode(w))


@pytest.mark.parametrize("kw", [{"n": 9, "IS": 1, "SC": 0}, {"n": 4, "IS": 5, "SC": 0}])
def test_bad_formats(kw):
    with pytest.raises(tvmq.ConfigError):
        tfx_levels(**kw)
