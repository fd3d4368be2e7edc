"""Bit packing of quantization codes.

Layout (the one the kernels and the device code read)
-----------------------------------------------------
Codes are taken in C order and written into one little-endian bit stream: code ``i`` of a
``b``-bit tensor occupies stream bits ``[i*b, (i+1)*b)``, least significant bit first, and
stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``. For ``b = 4`` this is two codes per
byte, low nibble first; for ``b = 2`` four per byte; for ``b = 8`` one byte per code. Codes
of 3, 5, 6 or 7 bits may straddle two bytes. The stream has ``ceil(n*b/8)`` bytes, unused
high bits of the last byte are zero.

In C, with ``p`` the packed bytes and ``mask = (1 << b) - 1``::

    uint32_t bit = i * b;
    uint32_t two = p[bit >> 3] | ((uint32_t)p[(bit >> 3) + 1] << 8);  /* b <= 8: 2 bytes */
    uint8_t code = (two >> (bit & 7)) & mask;

Reading the second byte is only needed when ``(bit & 7) + b > 8``; code generators that use
the unconditional two-byte read above allocate one padding byte after the stream
(:func:`packed_nbytes` with ``pad=True``).
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, DataError

MIN_BITS = 2
MAX_BITS = 8


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is an int in [2, 8], else raise :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise ConfigError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return int(bits)


def packed_nbytes(n: int, bits: int, *, pad: bool = False) -> int:
    """Bytes of the packed stream for ``n`` codes of ``bits`` bits (plus one if ``pad``)."""
    return (n * check_bits(bits) + 7) // 8 + (1 if pad else 0)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack integer codes into the bit stream described in the module docstring.

    Parameters
    ----------
    codes : np.ndarray
        Integer codes of any shape, each in ``[0, 2**bits)``; flattened in C order.
    bits : int
        Code width, 2 to 8.

    Returns
    -------
    np.ndarray
        1-D ``uint8`` array of ``packed_nbytes(codes.size, bits)`` bytes.
    """
    bits = check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise DataError(f"codes must be integers, got dtype {codes.dtype}")
    flat = codes.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise DataError(
            f"codes must be in [0, {1 << bits}) for {bits}-bit packing, "
            f"got range [{flat.min()}, {flat.max()}]"
        )
    if bits == 8:
        return flat.astype(np.uint8)
    planes = (flat.astype(np.uint8)[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` codes of a packed stream as ``uint8``."""
    bits = check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise DataError(f"packed stream must be 1-D uint8, got {packed.dtype} {packed.shape}")
    if count < 0 or packed.size < packed_nbytes(count, bits):
        raise DataError(
            f"packed stream of {packed.size} bytes is too short for {count} {bits}-bit codes"
        )
    if bits == 8:
        return packed[:count].copy()
    planes = np.unpackbits(packed, bitorder="little", count=count * bits).reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (planes.astype(np.uint16) @ weights).astype(np.uint8)
