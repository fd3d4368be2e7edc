"""Dense / matmul with a LUT weight: ``out[..., n] = sum_k x[..., k] * W[k, n]``."""

from __future__ import annotations

import numpy as np

from .decode import LutWeight


def lut_matmul_compute(x, packed, levels, spec: LutWeight, *, transposed: bool):
    """TE compute of ``x @ W`` where ``W`` is decoded from ``packed`` in the reduction loop.

    Parameters
    ----------
    x : te.Tensor
        ``(..., K)`` float32 activations.
    packed, levels : te.Tensor
        uint8 codes (``spec.packed_bytes``) and float32 ``(n_groups, n_levels)`` levels.
    spec : LutWeight
        The stored weight: ``(K, N)``, or ``(N, K)`` when ``transposed`` (a dense layer's
        ``(out, in)`` weight consumed through ``permute_dims``).
    """
    from tvm import te

    n_out = spec.shape[0] if transposed else spec.shape[1]
    k_dim = spec.shape[1] if transposed else spec.shape[0]
    k = te.reduce_axis((0, k_dim), name="k")

    def f(*idx):
        *lead, n = idx
        widx = (n, k) if transposed else (k, n)
        return te.sum(x[(*lead, k)] * spec.value_expr(packed, levels, widx), axis=k)

    return te.compute((*x.shape[:-1], n_out), f, name="lut_matmul")


def lut_matmul_reference(x: np.ndarray, weight: np.ndarray, *, transposed: bool) -> np.ndarray:
    """numpy: ``x @ W`` with the decoded weight."""
    w = weight.T if transposed else weight
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
