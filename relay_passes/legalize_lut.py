"""LegalizeLUT: fuse ``quant.lut_decode`` into the conv / matmul that consumes it.

``conv2d(x, lut_decode(codes, levels, ...))``, ``conv1d(...)``, ``matmul(x,
lut_decode(...))`` and ``matmul(x, permute_dims(lut_decode(...)))`` become ``call_tir`` of
the LUT kernels in :mod:`tvmq.kernels`, which decode each weight element from the packed
codes inside the reduction loop: the float weight tensor is never materialized. The
decode bindings left unused are removed by dead-code elimination.

When the data input is ``quant.dequantize(q)`` (activations quantized by
:class:`AnnotateQuant` and :class:`Calibrate`) and the codebook is per tensor or per
channel, the integer kernels of :mod:`tvmq.kernels.integer` are used instead: they read the
int8 codes ``q`` and an int8 level table, accumulate in int32 and scale once per output.
Otherwise the float-LUT kernels run on the dequantized input.

With ``requantize="fixed"`` an integer layer whose result only flows through a bias
``add``, an optional ReLU (``relu`` or ``clip(0, 6)``) and the next layer's
``quant.quantize`` becomes one kernel emitting int8 codes with integer-only arithmetic
(:mod:`tvmq.kernels.requantize`); the float epilogue is otherwise fused by TVM's FuseOps.

A ``lut_decode`` with any other consumer is left alone; ``LegalizeOps`` later gives it the
fallback (materializing) legalization, so the module still runs, just not compressed.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from tvmq.kernels import (
    INPLACE_ATTR,
    UNSIGNED_OFFSET,
    ZP_FOLDED,
    code_range,
    int_level_table,
    kernel_requant,
    lut_conv_compute,
    lut_conv_int_avgpool_compute,
    lut_conv_int_compute,
    lut_matmul_compute,
    lut_matmul_int_compute,
    out_scales,
    quantize_multiplier,
    residual_multiplier,
    shared_table,
    supports_integer,
    zero_point_sums,
)
from tvmq.ops import (
    DEQUANTIZE_OP,
    QUANTIZE_OP,
    act_params,
    is_lut_decode,
    is_op,
    prim_float,
    prim_int,
    snap_arg,
    spec_of,
)

from ._graph import LAYER_OPS, bindings_and_uses, op_name, static_shape


def _requant_chains(func: relax.Function) -> tuple[dict, dict]:
    """``{quantize call: (layer call, bias array or None, act, pool or None)}`` and
    ``{absorbed var: its chain's quantize call}``.

    A chain is ``layer -> [add(., const)] -> [relu | clip(., 0, 6)] -> [max_pool2d] ->
    quant.quantize`` where every intermediate value has a single use. A max-pool moves
    after the requantize: quantize is monotone, so pooling int8 codes gives exactly the
    codes of the pooled floats (and the fp32 tensor before the pool disappears). A global
    ``avg_pool2d`` (optionally followed by a reshape) ends a conv chain too: that kernel
    keeps the float epilogue and pools inside (:func:`lut_conv_int_avgpool_compute`).
    The pool entry of a chain is ``(pool call, reshape call or None)``.
    """
    bound, uses = bindings_and_uses(func)
    chains, absorbed = {}, {}
    for value in bound.values():
        if not is_op(value, QUANTIZE_OP):
            continue
        var, act, bias, pool, chain = value.args[0], None, None, None, []
        src = bound.get(var)
        reshape = None
        if op_name(src) == "relax.reshape" and _is_global_avg_pool(bound.get(src.args[0])):
            reshape = src
            chain.append(var)
            var = src.args[0]
            src = bound.get(var)
        if op_name(src) == "relax.nn.max_pool2d" or _is_global_avg_pool(src):
            if not isinstance(src.args[0], relax.Var):
                continue
            pool = (src, reshape)
            chain.append(var)
            var = src.args[0]
            src = bound.get(var)
        elif reshape is not None:
            continue
        if op_name(src) == "relax.nn.relu" or _is_relu6(src):
            act = "relu" if op_name(src) == "relax.nn.relu" else "relu6"
            chain.append(var)
            var = src.args[0]
            src = bound.get(var)
        residual = None
        side = _residual_side(src, bound) if op_name(src) == "relax.add" else None
        if side is not None:
            residual = bound[src.args[side]]
            chain.append(var)
            var = src.args[1 - side]
            src = bound.get(var)
        if op_name(src) == "relax.add":
            a, b = src.args
            const, other = (b, a) if isinstance(b, tvm.ir.GenericConst) else (a, b)
            if isinstance(const, tvm.ir.GenericConst):
                bias = const.value.numpy()
                chain.append(var)
                var, src = other, bound.get(other)
        avg = pool is not None and op_name(pool[0]) == "relax.nn.avg_pool2d"
        if avg and (
            op_name(src) != "relax.nn.conv2d" or src.attrs.data_layout != pool[0].attrs.layout
        ):
            continue
        if op_name(src) in LAYER_OPS and isinstance(var, relax.Var):
            chain.append(var)
            if all(uses.get(v, 0) == 1 for v in chain):
                chains[value] = (src, bias, act, pool, residual)
                absorbed.update(dict.fromkeys(chain, value))
    return chains, absorbed


def _residual_side(add, bound: dict) -> int | None:
    """Which operand of ``add`` is ``quant.dequantize`` of int8 codes added to a computed
    tensor of the same shape (a residual the integer kernel takes as codes), or None."""
    sides = [
        i for i, v in enumerate(add.args)
        if isinstance(v, relax.Var) and is_op(bound.get(v), DEQUANTIZE_OP)
    ]  # fmt: skip
    if len(sides) != 1 or not isinstance(add.args[1 - sides[0]], relax.Var):
        return None
    shape = static_shape(add.args[0])
    if shape is None or shape != static_shape(add.args[1]):
        return None
    return sides[0]


def _is_global_avg_pool(call) -> bool:
    """An ``avg_pool2d`` over the whole feature map, without padding."""
    if op_name(call) != "relax.nn.avg_pool2d":
        return False
    a = call.attrs
    shape = [int(n) for n in call.args[0].ty.shape]
    spatial = [shape[a.layout.index(c)] for c in "HW"] if set("HW") <= set(a.layout) else None
    return (
        spatial is not None
        and [int(k) for k in a.pool_size] == spatial
        and not any(int(p) for p in a.padding)
        and not a.ceil_mode
        and str(a.out_layout) in ("", str(a.layout))
    )


def _is_relu6(call) -> bool:
    if op_name(call) != "relax.clip":
        return False
    lo, hi = (float(getattr(a.value, "value", a.value)) for a in call.args[1:3])
    return lo == 0.0 and hi == 6.0


@expr_functor.mutator
class _Legalizer(PyExprMutator):
    def __init__(self, mod, fixed: bool = False, unsigned_inputs: bool = False):
        super().__init__(mod)
        self.fixed = fixed
        self.unsigned_inputs = unsigned_inputs  # see LegalizeLUT
        self.chains: dict = {}
        self.absorbed: dict = {}
        self.held: dict = {}  # chain's quantize call -> its absorbed bindings, in order

    def visit_var_binding_(self, binding):
        if binding.var in self.absorbed:
            # folded into the kernel emitted at the chain's quantize binding, or emitted
            # there as they are when no integer kernel applies (e.g. a skipped layer)
            self.held.setdefault(self.absorbed[binding.var], []).append(binding)
            return
        chain = self.chains.get(binding.value)
        if chain is not None:
            held = self.held.pop(binding.value, [])
            fused = self._requantized(binding.value, *chain)
            if fused is not None:
                return super().visit_var_binding_(relax.VarBinding(binding.var, fused))
            for b in held:
                super().visit_var_binding_(b)
        return super().visit_var_binding_(binding)

    def _decode_of(self, expr):
        """The ``lut_decode`` call ``expr`` is bound to, or None."""
        if isinstance(expr, relax.Var):
            value = self.lookup_binding(expr)
            if value is not None and is_lut_decode(value):
                return value
        return None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        parts = self._layer_parts(call) if op_name(call) in LAYER_OPS else None
        if parts is None:
            return call
        x, decode, spec, transposed, kw, out_ch = parts
        integer = self._integer_args(x, decode, spec, kw)
        if integer is not None:
            q, table, w_scale, x_scale, x_zero = integer
            oscale = relax.const(out_scales(spec, w_scale, x_scale, out_ch), "float32")
            zps = _zp_sums(decode, table, spec, transposed, kw, x_zero)
            if kw is None:
                return self.builder_.call_te(
                    lambda a, p, t, o, z: lut_matmul_int_compute(
                        a, p, t, o, spec, x_zero=x_zero, transposed=transposed, zp_sums=z
                    ),
                    q, decode.args[0], table, oscale, zps,
                    primfunc_name_hint="lut_matmul_int",
                primfunc_attrs=_OUT_EWISE,
                )  # fmt: skip
            return self.builder_.call_te(
                lambda a, p, t, o, z: lut_conv_int_compute(
                    a, p, t, o, spec, x_zero=x_zero, zp_sums=z, **kw
                ),
                q, decode.args[0], table, oscale, zps,
                primfunc_name_hint="lut_conv_int",
                primfunc_attrs=_OUT_EWISE,
            )  # fmt: skip
        if kw is None:
            return self.builder_.call_te(
                lambda a, p, lv: lut_matmul_compute(a, p, lv, spec, transposed=transposed),
                x, decode.args[0], decode.args[1],
                primfunc_name_hint="lut_matmul",
            )  # fmt: skip
        kw.pop("unsigned_inputs", None)  # a float kernel: its input is float
        return self.builder_.call_te(
            lambda a, p, lv: lut_conv_compute(a, p, lv, spec, **kw),
            x, decode.args[0], decode.args[1],
            primfunc_name_hint="lut_conv",
        )  # fmt: skip

    def _layer_parts(self, call):
        """``(x, decode, spec, transposed, conv keywords or None, out channels)`` of a
        visited conv / matmul call whose weight is a ``lut_decode``, else None."""
        if op_name(call) == "relax.matmul":
            decode, transposed = self._decode_of(call.args[1]), False
            if decode is None and isinstance(call.args[1], relax.Var):
                src = self.lookup_binding(call.args[1])
                if op_name(src) == "relax.permute_dims" and _is_2d_transpose(src):
                    decode, transposed = self._decode_of(src.args[0]), True
            if decode is None:
                return None
            spec = spec_of(decode)
            return call.args[0], decode, spec, transposed, None, spec.shape[0 if transposed else 1]
        decode = self._decode_of(call.args[1])
        if decode is None:
            return None
        a = call.attrs
        if str(a.out_layout) not in ("", str(a.data_layout)):
            return None  # a layout change on output: leave to the fallback
        if a.out_dtype not in (None, "", "float32"):
            return None
        kw = _conv_kwargs(a)
        spec = spec_of(decode)
        if self.unsigned_inputs and _vnni_shaped(kw, spec):
            kw["unsigned_inputs"] = True
        return call.args[0], decode, spec, False, kw, spec.shape[kw["kernel_layout"].index("O")]

    def _requantized(self, quant, layer, bias, act, pool=None, residual=None):
        """The integer-only kernel call replacing ``quant([pool](act(layer + bias [+
        residual])))``, or None (then the chain keeps its float epilogue)."""
        if pool is not None and op_name(pool[0]) == "relax.nn.avg_pool2d":
            return self._avg_pooled(quant, layer, bias, act, *pool, residual=residual)
        call = self._requant_kernel(quant, layer, bias, act, residual)
        if call is None or pool is None:
            return call
        codes = self.builder_.emit(call)
        return relax.Call(pool[0].op, [codes], pool[0].attrs)

    def _avg_pooled(self, quant, layer, bias, act, pool, reshape, residual=None):
        """``quant([reshape](global_avg_pool(act(conv + bias [+ residual]))))`` as one
        integer conv kernel with the float epilogue and the pool inside (None: not an
        integer conv)."""
        found = self._integer_layer(layer)
        if found is None or found[0][4] is None:
            return None
        (_, decode, spec, transposed, kw, out_ch), (q, table, w_scale, x_scale, x_zero) = found
        oscale = relax.const(out_scales(spec, w_scale, x_scale, out_ch), "float32")
        zps = _zp_sums(decode, table, spec, transposed, kw, x_zero)
        b = np.zeros(out_ch, np.float32) if bias is None else bias.reshape(-1)
        if b.size != out_ch:
            return None
        s_out, z_out, bits = act_params(quant)
        args = [q, decode.args[0], table, oscale, zps, relax.const(b.astype(np.float32), "float32")]
        snap = snap_arg(quant)
        if snap is not None:
            args.append(snap)
        res = None
        if residual is not None:
            args.append(self.visit_expr(residual.args[0]))
            res = (prim_float(residual.args[1]), prim_int(residual.args[2]))

        def compute(a, p, t, o, z, bb, *rest):  # rest: [snap table], [residual codes]
            sn, rest = (rest[0], rest[1:]) if snap is not None else (None, rest)
            return lut_conv_int_avgpool_compute(
                a, p, t, o, bb, spec, x_zero=x_zero, zp_sums=z, act=act, out_scale=s_out,
                out_zero=z_out, bits=bits, residual=(rest[0], *res) if rest else None,
                snap=sn, **kw,
            )  # fmt: skip

        codes = self.builder_.call_te(
            compute,
            *args,
            primfunc_name_hint="lut_conv_int_avgpool",
        )  # fmt: skip
        if reshape is None:
            return codes
        return relax.Call(reshape.op, [self.builder_.emit(codes), reshape.args[1]])

    def _integer_layer(self, layer):
        """``(layer parts, integer args)`` (see ``_layer_parts``, ``_integer_args``) of a
        chain's conv / matmul, its arguments visited; None when no integer kernel applies."""
        new_layer = relax.Call(layer.op, [self.visit_expr(a) for a in layer.args], layer.attrs)
        parts = self._layer_parts(new_layer)
        if parts is None:
            return None
        integer = self._integer_args(*parts[:3], parts[4])
        return None if integer is None else (parts, integer)

    def _requant_kernel(self, quant, layer, bias, act, residual=None):
        found = self._integer_layer(layer)
        if found is None:
            return None
        (_, decode, spec, transposed, kw, out_ch), (q, table, w_scale, x_scale, x_zero) = found
        w_scale = w_scale if spec.axis is not None else np.full(out_ch, w_scale[0], np.float32)
        acc_scale = np.float64(x_scale) * w_scale.astype(np.float64)
        out_ndim = len(layer.ty.shape)
        c_pos = out_ndim - 1 if kw is None else kw["data_layout"].index("C")
        bias_vec = np.zeros(out_ch)
        if bias is not None:
            axis_in_bias = c_pos - (out_ndim - bias.ndim)
            if bias.size != out_ch or (bias.ndim and bias.shape[axis_in_bias] != out_ch):
                return None  # not a per-channel bias
            bias_vec = bias.reshape(-1).astype(np.float64)
        s_out, z_out, bits = act_params(quant)
        snap = snap_arg(quant)  # a non-uniform quantizer: clamp to 8 bits, then snap
        snapped = snap is not None
        lo, hi = code_range(bits, snapped)
        if act is not None:
            lo = max(lo, z_out)
        if act == "relu6":
            hi = min(hi, z_out + int(np.floor(6.0 / s_out + 0.5)))
        bias_q = np.round(bias_vec / acc_scale).astype(np.int64)
        # the zero-point term of the raw-code sum folds into the bias (no kernel stage)
        bias_q = bias_q + _zp_sums(decode, table, spec, transposed, kw, x_zero, as_numpy=True)
        if np.abs(bias_q).max(initial=0) >= 2**31:
            return None  # keep the float epilogue rather than overflow
        bias_q = bias_q.astype(np.int32)
        mult, shift = quantize_multiplier(acc_scale / s_out)
        offset, mult, shift, high_word = kernel_requant(bias_q, mult, shift)
        consts = [
            relax.const(offset, "int64"),
            relax.const(mult, "int32"),
            relax.const(shift, "int32"),
        ]
        if snapped:
            consts.append(snap)
        req = (z_out, lo, hi, high_word)
        attrs, name, res = _OUT_EWISE, "", None
        if residual is not None:
            rm = residual_multiplier(prim_float(residual.args[1]), acc_scale)
            if rm is None:
                return None
            rmult, rshift = rm
            consts += [self.visit_expr(residual.args[0]), relax.const(rmult, "int32")]
            res = (prim_int(residual.args[2]), rshift)
            # out[i] depends on residual[i] only: the output may overwrite the residual
            attrs, name = {**_OUT_EWISE, INPLACE_ATTR: 3 + len(consts) - 2}, "_residual"

        def requant(b, m, s, rest):
            return (b, m, s, *req, *rest[:1]) if snapped else (b, m, s, *req)

        def residual_of(rest):
            r = rest[1:] if snapped else rest
            return (r[0], res[0], r[1], res[1]) if r else None

        if kw is None:
            return self.builder_.call_te(
                lambda a, p, t, b, m, s, *r: lut_matmul_int_compute(
                    a, p, t, None, spec, x_zero=x_zero, transposed=transposed,
                    requant=requant(b, m, s, r), zp_sums=ZP_FOLDED, residual=residual_of(r),
                ),
                q, decode.args[0], table, *consts,
                primfunc_name_hint="lut_matmul_int_requant" + name,
                primfunc_attrs=attrs,
            )  # fmt: skip
        return self.builder_.call_te(
            lambda a, p, t, b, m, s, *r: lut_conv_int_compute(
                a, p, t, None, spec, x_zero=x_zero, requant=requant(b, m, s, r),
                zp_sums=ZP_FOLDED, residual=residual_of(r), **kw,
            ),
            q, decode.args[0], table, *consts,
            primfunc_name_hint="lut_conv_int_requant" + name,
            primfunc_attrs=attrs,
        )  # fmt: skip

    def _integer_args(self, x, decode, spec, kw=None):
        """``(q, table, w_scale, x_scale, x_zero)`` when the integer kernel applies (the
        input is a ``quant.dequantize`` and the codebook is per tensor or per channel);
        ``x_zero`` in the uint8 domain when the conv keywords ``kw`` say
        ``unsigned_inputs``."""
        if not (isinstance(x, relax.Var) and supports_integer(spec)):
            return None
        src = self.lookup_binding(x)
        if not is_op(src, DEQUANTIZE_OP):
            return None
        table, w_scale = int_level_table(decode.args[1].value.numpy())
        return (
            src.args[0],
            relax.const(shared_table(table), "int8"),
            w_scale,
            prim_float(src.args[1]),
            prim_int(src.args[2]) + (UNSIGNED_OFFSET if (kw or {}).get("unsigned_inputs") else 0),
        )


# The integer kernels have several stages (decode, accumulate, epilogue), which TVM's
# pattern analysis calls opaque; they are a reduction whose output takes elementwise
# epilogues (bias, ReLU), so say so and let FuseOps fuse those into them.
_OUT_EWISE = {"op_pattern": 4}


def _zp_sums(decode, table, spec, transposed, kw, x_zero, as_numpy=False):
    """The constant zero-point sums of a layer (:func:`zero_point_sums`)."""
    out_axis = (0 if transposed else 1) if kw is None else kw["kernel_layout"].index("O")
    sums = zero_point_sums(
        decode.args[0].value.numpy(), table.value.numpy(), spec, out_axis, x_zero
    )
    return sums.astype(np.int64) if as_numpy else relax.const(sums, "int32")


def _conv_kwargs(attrs) -> dict:
    """The keywords of the LUT conv kernels from a Relax conv call's attributes."""
    return dict(
        strides=[int(s) for s in attrs.strides],
        padding=[int(p) for p in attrs.padding],
        dilation=[int(d) for d in attrs.dilation],
        groups=int(attrs.groups),
        data_layout=str(attrs.data_layout),
        kernel_layout=str(attrs.kernel_layout),
    )


def _vnni_shaped(kw: dict, spec) -> bool:
    """Whether a conv gets ``unsigned_inputs`` (when asked for): the channels-last 2-D
    convs the AVX-VNNI schedule tensorizes, regular or depthwise, output channels a
    multiple of 8 (a regular conv's kernel pads its input channels to a multiple of 4;
    :func:`tvmq.backend.schedule._conv_for_avx2`, ``_depthwise_for_vectors``)."""
    layout = kw["kernel_layout"]
    if kw["data_layout"] != "NHWC" or len(layout) != 4:
        return False
    out_ch, in_per_group = (int(spec.shape[layout.index(c)]) for c in "OI")
    depthwise = in_per_group == 1 and kw["groups"] == out_ch
    return (kw["groups"] == 1 or depthwise) and out_ch % 8 == 0


def _is_2d_transpose(call) -> bool:
    axes = call.attrs.axes
    return len(call.args[0].ty.shape) == 2 and (axes is None or [int(a) for a in axes] == [1, 0])


@tvm.transform.module_pass(opt_level=0, name="LegalizeLUT")
class LegalizeLUT:
    """Rewrite annotated conv / matmul into LUT kernels that read packed codes.

    Parameters
    ----------
    requantize : {"float", "fixed"}
        Integer-kernel epilogue (see the module doc and
        :class:`tvmq.config.ActivationConfig`).
    unsigned_inputs : bool
        The channels-last 2-D convs take their int8 codes offset to uint8 (``+ 128``, the
        zero point with them; same results), for an x86 host with AVX-VNNI, whose
        ``vpdpbusd`` multiplies uint8 by int8 (:func:`tvmq.backend.schedule.
        unsigned_inputs_for`). Never for a microcontroller: its C dot products read int8.
    """

    def __init__(self, requantize: str = "float", unsigned_inputs: bool = False):
        self.requantize = requantize
        self.unsigned_inputs = unsigned_inputs

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        legalizer = _Legalizer(
            mod, fixed=self.requantize == "fixed", unsigned_inputs=self.unsigned_inputs
        )
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                if legalizer.fixed:
                    legalizer.chains, legalizer.absorbed = _requant_chains(func)
                legalizer.builder_.update_func(gv, legalizer.visit_expr(func))
        return relax.transform.DeadCodeElimination()(legalizer.builder_.get())
