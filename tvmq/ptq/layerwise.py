"""Layer-wise codebook refinement: fit the levels to the layer's output, not its weights.

A weight-space codebook (k-means) minimizes ``||W - W_hat||``; what the network sees is
``W X``. With the codes fixed, the output of row ``o`` is linear in its group's levels
``c``::

    W_hat[o] X^T = c^T B_o^T,   B_o[:, l] = sum of the columns k of X with code[o, k] == l

so the levels minimizing ``sum_o ||X w_o - B_o c||^2`` solve an ``L x L`` linear system per
codebook (all rows sharing it accumulate into it). A ridge term pulls toward the
weight-space levels, scaled by the mean curvature, so a few hundred calibration samples do
not overfit a 3,136-input layer. Pure numpy; :mod:`tvmq.ptq.inputs` provides ``X``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def code_column_sums(x: np.ndarray, codes: np.ndarray, n_levels: int) -> np.ndarray:
    """``B[:, l] = sum_k x[:, k] * (codes[k] == l)``, shape ``(N, n_levels)``."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_levels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    xs = x[:, order]
    out = np.zeros((x.shape[0], n_levels), dtype=np.float64)
    used = counts > 0
    if used.any():
        out[:, used] = np.add.reduceat(xs, starts[used], axis=1)
    return out


def refine_levels(
    w2d: np.ndarray,
    codes2d: np.ndarray,
    levels: np.ndarray,
    row_group: np.ndarray,
    x: np.ndarray,
    ridge: float = 0.05,
    shared_scale: np.ndarray | None = None,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Output-optimal levels for fixed codes.

    Parameters
    ----------
    w2d : (O, K) float
        The float weight, one row per output channel, columns in the order of ``x``.
    codes2d : (O, K) int
        The codes of ``w2d``.
    levels : (G, L) float
        Current levels (weight-space fit), the ridge target.
    row_group : (O,) int
        Codebook (row of ``levels``) of each output channel.
    x : (N, K) float
        Calibration inputs of the layer (im2col rows for a convolution).
    ridge : float
        Regularization relative to the mean diagonal of the normal equations.
    shared_scale : (G,) float, optional
        For a ``shared`` codebook (``levels[g] = shared_scale[g] * shape``): fit the one
        shape to all groups' outputs at once (the normal equations summed with weights
        ``scale**2`` and ``scale``), so the groups keep sharing one table.
    groups : int
        Convolution groups: output channel ``o`` of group ``g`` reads the ``g``-th slice of
        ``x``'s columns (``x`` has ``groups`` times ``w2d``'s columns; depthwise: one
        input channel per output channel).

    Returns
    -------
    levels : (G, L) float32
        Sorted ascending per group.
    codes : (O, K) int
        ``codes2d`` relabeled to follow the sorting (the decoded weight is unchanged).
    """
    w2d = np.asarray(w2d, np.float64)
    x = np.asarray(x, np.float64)
    codes2d = np.asarray(codes2d)
    lv = np.asarray(levels, np.float64)
    n_groups, n_levels = lv.shape
    if w2d.shape != codes2d.shape or x.shape[1] != groups * w2d.shape[1]:
        raise DataError(f"shapes disagree: w {w2d.shape}, codes {codes2d.shape}, x {x.shape}")
    hess = np.zeros((n_groups, n_levels, n_levels))
    rhs = np.zeros((n_groups, n_levels))
    for o in range(w2d.shape[0]):
        xo = _group_columns(x, o, w2d.shape, groups)
        b = code_column_sums(xo, codes2d[o], n_levels)
        t = xo @ w2d[o]
        g = int(row_group[o])
        hess[g] += b.T @ b
        rhs[g] += b.T @ t
    new = lv.copy()
    if shared_scale is not None:
        sc = np.asarray(shared_scale, np.float64)
        h, r = np.tensordot(sc**2, hess, axes=1), sc @ rhs
        lam = ridge * max(np.trace(h) / n_levels, 1e-12)
        shape = np.linalg.solve(h + lam * np.eye(n_levels), r + lam * lv[0] / sc[0])
        top = float(np.abs(shape).max()) or 1.0  # largest level = the scale (int8 tables)
        new = (sc * top)[:, None] * (shape / top)[None, :]
    for g in range(n_groups if shared_scale is None else 0):
        scale = max(np.trace(hess[g]) / n_levels, 1e-12)
        lam = ridge * scale
        a = hess[g] + lam * np.eye(n_levels)
        new[g] = np.linalg.solve(a, rhs[g] + lam * lv[g])
    # keep each group sorted (and strictly increasing): relabel the codes to match
    out_codes = codes2d.copy()
    for g in range(n_groups):
        perm = np.argsort(new[g], kind="stable")
        new[g] = new[g][perm]
        for i in range(1, n_levels):  # break exact ties: repeats may only pad a codebook
            if new[g, i] <= new[g, i - 1]:
                new[g, i] = np.nextafter(np.float32(new[g, i - 1]), np.float32(np.inf))
        inv = np.empty(n_levels, dtype=np.int64)
        inv[perm] = np.arange(n_levels)
        rows = row_group == g
        out_codes[rows] = inv[codes2d[rows]]
    return new.astype(np.float32), out_codes


def _group_columns(x: np.ndarray, o: int, w_shape: tuple[int, int], groups: int) -> np.ndarray:
    """The columns of ``x`` that output channel ``o`` of a ``groups``-group layer reads."""
    if groups == 1:
        return x
    n_out, k = w_shape
    g = o // (n_out // groups)
    return x[:, g * k : (g + 1) * k]


def _by_group(w2d: np.ndarray, groups: int):
    """``(rows, column slice)`` of each convolution group of an ``(O, K)`` weight."""
    n_out, k = w2d.shape
    per = n_out // groups
    for g in range(groups):
        yield slice(g * per, (g + 1) * per), slice(g * k, (g + 1) * k)


TARGET_RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Ridge strengths :func:`quantized_input_target` chooses from (relative to the mean
curvature), by the error on held-out calibration rows."""


def quantized_input_target(
    w2d: np.ndarray,
    x_float: np.ndarray,
    x_quant: np.ndarray,
    groups: int = 1,
    ridges: tuple[float, ...] = TARGET_RIDGES,
    holdout: int = 4,
) -> np.ndarray:
    """The weight to fit on quantized inputs so the layer reproduces its *float* output.

    A layer of the quantized network reads ``X_hat`` (activations quantized, layers before
    it quantized) where the float one read ``X`` (the same calibration rows). The target
    of the layer is ``X W^T``, so its weight should minimize ``||X W^T - X_hat V^T||``.
    Its least-squares solution ``W*`` splits that error exactly::

        ||X W^T - X_hat W_hat^T||^2 = ||X W^T - X_hat W*^T||^2 + ||X_hat (W* - W_hat)^T||^2

    (the residual of a least-squares fit is orthogonal to ``X_hat``), so quantizing
    ``W*`` with the ordinary output-error objective on rows ``X_hat``
    (:func:`gptq_codes`, :func:`refine_levels`) minimizes the float-output error: the
    layer compensates what the quantized layers and activations before it got wrong
    (asymmetric calibration, as in GPTAQ, Li et al. 2025).

    ``W*`` has as many unknowns per channel as the layer has inputs, and a dense layer
    gets one row per calibration sample: unregularized it overfits (measured: the IMU
    CNN's 3-bit logits error rose from 0.05 to 0.09). So it is a ridge fit toward ``W``,
    its strength (times the mean diagonal of ``X_hat^T X_hat``) chosen per convolution
    group from ``ridges`` by the error on every ``holdout``-th row, fitted on the others;
    ``W`` itself (no correction) when none of them beats it there. Then refitted on all
    rows with the chosen strength.

    Parameters
    ----------
    w2d : (O, K) float
        The float weight, one row per output channel.
    x_float, x_quant : (N, K) float
        The layer's input rows in the float and in the quantized network.
    groups : int
        Convolution groups (see :func:`refine_levels`): each group is fitted on its slice.
    ridges : tuple of float
        Candidate ridge strengths, relative to the mean curvature.
    holdout : int
        Every ``holdout``-th row is held out to choose the ridge.

    Returns
    -------
    (O, K) float64
    """
    w = np.asarray(w2d, np.float64)
    xf = np.asarray(x_float, np.float64)
    xq = np.asarray(x_quant, np.float64)
    if xf.shape != xq.shape or xf.shape[1] != groups * w.shape[1]:
        raise DataError(f"shapes disagree: w {w.shape}, x {xf.shape}, x_hat {xq.shape}")
    held = np.arange(len(xq)) % holdout == 0

    def normal_equations(a, b, wg):  # computed once per row set, solved per ridge
        n = max(len(a), 1)
        return a.T @ a / n, a.T @ (b @ wg.T) / n

    def solve(h, rhs, wg, ridge):
        lam = ridge * max(float(np.mean(np.diag(h))), 1e-12)
        return np.linalg.solve(h + lam * np.eye(h.shape[0]), rhs + lam * wg.T).T

    out = w.copy()
    for rows, cols in _by_group(w, groups):
        a, b, wg = xq[:, cols], xf[:, cols], w[rows]
        want = b[held] @ wg.T

        def held_error(v, a=a, want=want):
            return float(((a[held] @ v.T - want) ** 2).sum())

        h_fit, rhs_fit = normal_equations(a[~held], b[~held], wg)
        best, best_err = None, held_error(wg)
        for ridge in ridges:
            err = held_error(solve(h_fit, rhs_fit, wg, ridge))
            if err < best_err:
                best, best_err = ridge, err
        if best is not None:
            out[rows] = solve(*normal_equations(a, b, wg), wg, best)
    return out


def layer_output(x: np.ndarray, w2d: np.ndarray, groups: int = 1) -> np.ndarray:
    """``(R, O)``: the layer's output (no bias) on rows ``x`` (R, G K) for weight ``w2d``
    (O, K) with ``groups`` convolution groups."""
    x = np.asarray(x, np.float64)
    w2d = np.asarray(w2d, np.float64)
    if groups == 1:
        return x @ w2d.T
    o, k = w2d.shape
    xg = x.reshape(x.shape[0], groups, k)
    wg = w2d.reshape(groups, o // groups, k)
    return np.einsum("rgk,gok->rgo", xg, wg).reshape(x.shape[0], o)


def output_error(w2d: np.ndarray, what2d: np.ndarray, x: np.ndarray, groups: int = 1) -> float:
    """Relative output error ``||X (W - W_hat)^T||^2 / ||X W^T||^2`` of a layer (with
    ``groups`` convolution groups, see :func:`layer_output`)."""
    w2d = np.asarray(w2d, np.float64)
    ref = layer_output(x, w2d, groups)
    err = layer_output(x, w2d - np.asarray(what2d, np.float64), groups)
    return float((err**2).sum() / max((ref**2).sum(), 1e-30))


def _nearest(levels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Index of the nearest level of each row's sorted codebook: ``levels`` (O, L), ``w``
    (O,)."""
    mid = 0.5 * (levels[:, 1:] + levels[:, :-1])  # (O, L-1) decision thresholds
    return (w[:, None] > mid).sum(axis=1)


def gptq_codes(
    w2d: np.ndarray,
    levels: np.ndarray,
    x: np.ndarray,
    damp: float = 0.01,
    block: int = 128,
    groups: int = 1,
) -> np.ndarray:
    """Code assignment with error feedback (GPTQ, Frantar et al. 2023, for codebooks).

    Columns are coded one after another; the output error each one leaves,
    ``(w - q) / [H^-1]_jj``, is pushed onto the columns not yet coded through the inverse
    Hessian ``H = X^T X`` (the OBS update), so later columns compensate for earlier ones
    instead of each rounding to its nearest level alone.

    Parameters
    ----------
    w2d : (O, K) float
        Float weight, one row per output channel.
    levels : (O, L) float
        Each row's sorted codebook (a per-tensor codebook repeated per row).
    x : (N, K) float
        Calibration inputs (im2col rows for a convolution).
    damp : float
        Added to the diagonal of ``H``, relative to its mean: regularizes a Hessian
        estimated from few rows (and keeps inputs that are always zero harmless).
    block : int
        Columns per lazy batch update (speed only; the result is the same).
    groups : int
        Convolution groups (see :func:`refine_levels`): each group has its own ``H``.

    Returns
    -------
    codes : (O, K) int64
    """
    w = np.array(w2d, np.float64)
    levels = np.asarray(levels, np.float64)
    x = np.asarray(x, np.float64)
    if x.shape[1] != groups * w.shape[1] or levels.shape[0] != w.shape[0]:
        raise DataError(f"shapes disagree: w {w.shape}, levels {levels.shape}, x {x.shape}")
    if groups > 1:
        codes = np.zeros(w.shape, np.int64)
        for rows, cols in _by_group(w, groups):
            codes[rows] = gptq_codes(w[rows], levels[rows], x[:, cols], damp, block)
        return codes
    o, k = w.shape
    h = x.T @ x / max(len(x), 1)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h += damp * max(float(np.mean(np.diag(h))), 1e-12) * np.eye(k)
    # upper Cholesky factor of H^-1: row j holds the OBS update of column j onto j+1..
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros((o, k), np.int64)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        err_block = np.zeros((o, b1 - b0))
        for j in range(b0, b1):
            idx = _nearest(levels, w[:, j])
            codes[:, j] = idx
            q = levels[np.arange(o), idx]
            err = (w[:, j] - q) / u[j, j]
            w[:, j + 1 : b1] -= np.outer(err, u[j, j + 1 : b1])
            err_block[:, j - b0] = err
        w[:, b1:] -= err_block @ u[b0:b1, b1:]
    return codes
