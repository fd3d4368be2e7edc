"""Decoding one weight element from packed codes inside a TE expression."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codebook import Codebook
from ..packing import unpack


@dataclass(frozen=True)
class LutWeight:
    """Static description of a packed weight tensor.

    Attributes
    ----------
    shape : tuple of int
        Weight shape in the layout its consumer expects (e.g. ``HWIO``).
    bits : int
        Code width; codes are packed in C order of ``shape`` (see :mod:`tvmq.packing`)
        followed by one zero padding byte, so a two-byte read never leaves the buffer.
    axis : int or None
        Channel axis of the codebook (None: one codebook).
    group_size : int or None
        Group size along the flattened reduction dimension (see :mod:`tvmq.codebook`).
    n_groups, n_levels : int
        Shape of the level table ``levels[n_groups, n_levels]``.
    """

    shape: tuple[int, ...]
    bits: int
    axis: int | None
    group_size: int | None
    n_groups: int
    n_levels: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def packed_bytes(self) -> int:
        """Bytes of the packed code buffer, padding byte included."""
        return (self.numel * self.bits + 7) // 8 + 1

    def strides(self) -> tuple[int, ...]:
        out, acc = [], 1
        for s in reversed(self.shape):
            out.append(acc)
            acc *= s
        return tuple(reversed(out))

    def group_of(self, idx):
        """Group index (an expression) of the element at ``idx`` (a tuple of expressions)."""
        if self.axis is None:
            return 0
        if self.group_size is None:
            return idx[self.axis]
        others = [d for d in range(len(self.shape)) if d != self.axis]
        red = math.prod(self.shape[d] for d in others)
        r, acc = 0, 1
        for d in reversed(others):
            r = r + idx[d] * acc
            acc *= self.shape[d]
        return idx[self.axis] * (red // self.group_size) + r // self.group_size

    def code_expr(self, packed, idx):
        """The code of the element at ``idx`` read from the uint8 buffer ``packed``."""
        flat = sum(i * s for i, s in zip(idx, self.strides()))
        mask = (1 << self.bits) - 1
        if 8 % self.bits == 0:  # 2, 4, 8 bits: a code never straddles bytes
            # floordiv/floormod rather than shifts: TVM's simplifier folds them once a
            # schedule unrolls the codes of one byte (constant shifts in the C).
            from tvm import tirx

            per = 8 // self.bits
            byte = tirx.floordiv(flat, per)
            shift = tirx.floormod(flat, per) * self.bits
            return (packed[byte].astype("int32") >> shift) & mask
        bit = flat * self.bits
        byte = bit >> 3
        shift = bit & 7
        lo = packed[byte].astype("int32")
        hi = packed[byte + 1].astype("int32")
        return ((lo | (hi << 8)) >> shift) & mask

    def value_expr(self, packed, levels, idx):
        """The float32 level of the element at ``idx``."""
        return levels[self.group_of(idx), self.code_expr(packed, idx)]

    @classmethod
    def from_codebook(cls, cb: Codebook, shape: tuple[int, ...]) -> LutWeight:
        return cls(
            shape=tuple(int(s) for s in shape),
            bits=cb.bits,
            axis=None if cb.axis is None else cb.axis % len(shape),
            group_size=cb.group_size,
            n_groups=cb.n_groups,
            n_levels=cb.n_levels,
        )


def lut_decode_compute(packed, levels, spec: LutWeight):
    """TE compute materializing the float32 weight (the fallback legalization)."""
    from tvm import te

    return te.compute(
        spec.shape, lambda *idx: spec.value_expr(packed, levels, idx), name="lut_decode"
    )


def lut_decode_reference(packed: np.ndarray, levels: np.ndarray, spec: LutWeight) -> np.ndarray:
    """numpy: the float32 weight tensor encoded by ``packed`` and ``levels``."""
    codes = unpack(np.asarray(packed, dtype=np.uint8), spec.bits, spec.numel).reshape(spec.shape)
    idx = np.indices(spec.shape)
    groups = np.broadcast_to(np.asarray(spec.group_of(tuple(idx))), spec.shape)
    return np.asarray(levels, dtype=np.float32)[groups, codes]
