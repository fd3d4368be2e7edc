import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tvmq
from tvmq.packing import packed_nbytes


@given(st.integers(2, 8), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, n, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=n, dtype=np.uint8)
    packed = tvmq.pack(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_nbytes(n, bits) == (n * bits + 7) // 8
    np.testing.assert_array_equal(tvmq.unpack(packed, bits, n), codes)


def test_layout_is_lsb_first_little_endian():
    # 4-bit: low nibble first.
    assert tvmq.pack(np.array([1, 2, 15]), 4).tolist() == [0x21, 0x0F]
    # 2-bit: four per byte, first code in the lowest bits.
    assert tvmq.pack(np.array([3, 0, 1, 2]), 2).tolist() == [0b10_01_00_11]
    # 3-bit codes straddle bytes: 0b101, 0b110, 0b111 -> stream bits 101 011 111 (LSB first).
    assert tvmq.pack(np.array([5, 6, 7]), 3).tolist() == [0b11_110_101, 0b1]


def test_c_read_expression_matches():
    """The two-byte read documented for C code recovers every code."""
    rng = np.random.default_rng(1)
    for bits in range(2, 9):
        codes = rng.integers(0, 1 << bits, size=101)
        p = np.concatenate([tvmq.pack(codes, bits), [0]]).astype(np.uint32)  # pad byte
        got = [
            ((p[(i * bits) >> 3] | (p[((i * bits) >> 3) + 1] << 8)) >> ((i * bits) & 7))
            & ((1 << bits) - 1)
            for i in range(codes.size)
        ]
        assert got == codes.tolist()


@pytest.mark.parametrize("bits", [1, 9, 0, 4.0, True])
def test_bad_bits(bits):
    with pytest.raises(tvmq.ConfigError):
        tvmq.pack(np.zeros(4, dtype=np.uint8), bits)


def test_out_of_range_codes_and_short_stream():
    with pytest.raises(tvmq.DataError, match=r"\[0, 4\)"):
        tvmq.pack(np.array([4]), 2)
    with pytest.raises(tvmq.DataError, match="too short"):
        tvmq.unpack(np.zeros(1, dtype=np.uint8), 4, 3)
    with pytest.raises(tvmq.DataError):
        tvmq.pack(np.array([0.5]), 4)
