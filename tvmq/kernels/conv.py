"""1-D / 2-D convolution (grouped, hence depthwise too) with a LUT weight, any layout.

Data layouts are ``N``, ``C`` and spatial letters (``NCHW``, ``NHWC``, ``NCW``, ``NWC``);
kernel layouts ``O``, ``I`` and the same spatial letters (``OIHW``, ``HWIO``, ``HWOI`` as
TVM's TFLite frontend emits for depthwise, ``OIW``, ``WIO``). ``I`` is input channels per
group. The output has the data layout.
"""

from __future__ import annotations

import numpy as np

from .decode import LutWeight


def _spatial(layout: str) -> list[str]:
    return [c for c in layout if c not in "NC"]


def conv_loops(
    x, spec: LutWeight, *, strides, padding, dilation, groups: int, data_layout: str,
    kernel_layout: str, pad_value=0.0,
):  # fmt: skip
    """Geometry shared by the float and integer LUT convolutions.

    ``padding`` is ``(before_0, ..., before_{d-1}, after_0, ..., after_{d-1})`` over the
    spatial dimensions, as Relax's conv ops store it. Returns ``(xp, out_shape, indices,
    axes)``: the input padded with ``pad_value``, the output shape (data layout), a function
    from an output index to ``(input index, weight index)``, and the reduce axes.
    """
    from tvm import te, topi

    sp = _spatial(data_layout)
    nd = len(sp)
    pad_before = [0] * len(data_layout)
    pad_after = [0] * len(data_layout)
    for d, letter in enumerate(sp):
        pad_before[data_layout.index(letter)] = int(padding[d])
        pad_after[data_layout.index(letter)] = int(padding[nd + d])
    xp = x
    if any(pad_before + pad_after):
        xp = topi.nn.pad(x, pad_before, pad_after, pad_value=pad_value, name="pad")

    kdim = {c: spec.shape[kernel_layout.index(c)] for c in kernel_layout}
    out_ch = kdim["O"]
    in_per_group = kdim["I"]
    out_per_group = out_ch // groups
    rc = te.reduce_axis((0, in_per_group), name="rc")
    rk = [te.reduce_axis((0, kdim[c]), name=f"r{c.lower()}") for c in sp]

    out_shape = []
    for c in data_layout:
        if c == "N":
            out_shape.append(x.shape[data_layout.index("N")])
        elif c == "C":
            out_shape.append(out_ch)
        else:
            d = sp.index(c)
            size = int(xp.shape[data_layout.index(c)])
            eff = (kdim[c] - 1) * int(dilation[d]) + 1
            out_shape.append((size - eff) // int(strides[d]) + 1)

    def indices(o):
        oc = o[data_layout.index("C")]
        xin = {"N": o[data_layout.index("N")], "C": (oc // out_per_group) * in_per_group + rc}
        win = {"O": oc, "I": rc}
        for d, c in enumerate(sp):
            xin[c] = o[data_layout.index(c)] * int(strides[d]) + rk[d] * int(dilation[d])
            win[c] = rk[d]
        return tuple(xin[c] for c in data_layout), tuple(win[c] for c in kernel_layout)

    return xp, tuple(out_shape), indices, [rc, *rk]


def lut_conv_compute(
    x,
    packed,
    levels,
    spec: LutWeight,
    *,
    strides,
    padding,
    dilation,
    groups: int,
    data_layout: str,
    kernel_layout: str,
):
    """TE compute of a convolution whose weight is decoded from codes in the reduction loop
    (geometry and ``padding`` convention: :func:`conv_loops`)."""
    from tvm import te

    xp, out_shape, indices, axes = conv_loops(
        x, spec, strides=strides, padding=padding, dilation=dilation, groups=groups,
        data_layout=data_layout, kernel_layout=kernel_layout,
    )  # fmt: skip

    def f(*o):
        xi, wi = indices(o)
        return te.sum(xp[xi] * spec.value_expr(packed, levels, wi), axis=axes)

    return te.compute(out_shape, f, name="lut_conv")


def lut_conv_reference(
    x: np.ndarray,
    weight: np.ndarray,
    *,
    strides,
    padding,
    dilation,
    groups: int,
    data_layout: str,
    kernel_layout: str,
    dtype=np.float32,
) -> np.ndarray:
    """numpy: the same convolution with the decoded weight, computed in float64 and
    returned as ``dtype`` (float64 keeps integer sums exact below 2**53)."""
    sp = _spatial(data_layout)
    nd = len(sp)
    # To canonical N, C, spatial... and O, I, spatial...
    xc = np.transpose(x, [data_layout.index(c) for c in ["N", "C", *sp]]).astype(np.float64)
    wc = np.transpose(weight, [kernel_layout.index(c) for c in ["O", "I", *sp]]).astype(np.float64)
    pads = [(0, 0), (0, 0)] + [(int(padding[d]), int(padding[nd + d])) for d in range(nd)]
    xc = np.pad(xc, pads)
    n, _, *size = xc.shape
    o_ch, i_pg, *ks = wc.shape
    o_pg = o_ch // groups
    out_size = [(size[d] - ((ks[d] - 1) * dilation[d] + 1)) // strides[d] + 1 for d in range(nd)]
    out = np.zeros((n, o_ch, *out_size))
    for kpos in np.ndindex(*ks):
        sl = tuple(
            slice(
                kpos[d] * dilation[d], kpos[d] * dilation[d] + strides[d] * out_size[d], strides[d]
            )
            for d in range(nd)
        )
        patch = xc[(slice(None), slice(None), *sl)]  # (n, C, *out)
        for g in range(groups):
            xin = patch[:, g * i_pg : (g + 1) * i_pg]
            wg = wc[g * o_pg : (g + 1) * o_pg, :, *kpos]  # (o_pg, i_pg)
            out[:, g * o_pg : (g + 1) * o_pg] += np.einsum("nc...,oc->no...", xin, wg)
    back = [["N", "C", *sp].index(c) for c in data_layout]
    return np.transpose(out, back).astype(dtype)
