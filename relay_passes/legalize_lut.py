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

A ``lut_decode`` with any other consumer is left alone; ``LegalizeOps`` later gives it the
fallback (materializing) legalization, so the module still runs, just not compressed.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from tvmq.kernels import (
    int_level_table,
    lut_conv_compute,
    lut_conv_int_compute,
    lut_matmul_compute,
    lut_matmul_int_compute,
    out_scales,
    supports_integer,
)
from tvmq.ops import DEQUANTIZE_OP, is_lut_decode, is_op, prim_float, prim_int, spec_of


def _op_name(call) -> str:
    return call.op.name if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else ""


@expr_functor.mutator
class _Legalizer(PyExprMutator):
    def _decode_of(self, expr):
        """The ``lut_decode`` call ``expr`` is bound to, or None."""
        if isinstance(expr, relax.Var):
            value = self.lookup_binding(expr)
            if value is not None and is_lut_decode(value):
                return value
        return None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        op = _op_name(call)
        if op in ("relax.nn.conv2d", "relax.nn.conv1d"):
            decode = self._decode_of(call.args[1])
            if decode is not None and call.attrs.out_dtype in (None, "", "float32"):
                return self._conv(call, decode)
        elif op == "relax.matmul":
            decode = self._decode_of(call.args[1])
            transposed = False
            if decode is None and isinstance(call.args[1], relax.Var):
                src = self.lookup_binding(call.args[1])
                if _op_name(src) == "relax.permute_dims" and _is_2d_transpose(src):
                    decode = self._decode_of(src.args[0])
                    transposed = True
            if decode is not None:
                spec = spec_of(decode)
                integer = self._integer_args(
                    call.args[0], decode, spec, spec.shape[0 if transposed else 1]
                )
                if integer is not None:
                    q, table, oscale, zero = integer
                    return self.builder_.call_te(
                        lambda a, p, t, o: lut_matmul_int_compute(
                            a, p, t, o, spec, x_zero=zero, transposed=transposed
                        ),
                        q, decode.args[0], table, oscale,
                        primfunc_name_hint="lut_matmul_int",
                    )  # fmt: skip
                return self.builder_.call_te(
                    lambda x, p, lv: lut_matmul_compute(x, p, lv, spec, transposed=transposed),
                    call.args[0],
                    decode.args[0],
                    decode.args[1],
                    primfunc_name_hint="lut_matmul",
                )
        return call

    def _integer_args(self, x, decode, spec, out_channels):
        """``(q, table, out_scale, zero)`` when the integer kernel applies, else None."""
        if not (isinstance(x, relax.Var) and supports_integer(spec)):
            return None
        src = self.lookup_binding(x)
        if not is_op(src, DEQUANTIZE_OP):
            return None
        scale, zero = prim_float(src.args[1]), prim_int(src.args[2])
        table, w_scale = int_level_table(decode.args[1].value.numpy())
        oscale = out_scales(spec, w_scale, scale, out_channels)
        return src.args[0], relax.const(table, "int8"), relax.const(oscale, "float32"), zero

    def _conv(self, call, decode):
        spec = spec_of(decode)
        a = call.attrs
        if str(a.out_layout) not in ("", str(a.data_layout)):
            return call  # a layout change on output: leave to the fallback
        kw = dict(
            strides=[int(s) for s in a.strides],
            padding=[int(p) for p in a.padding],
            dilation=[int(d) for d in a.dilation],
            groups=int(a.groups),
            data_layout=str(a.data_layout),
            kernel_layout=str(a.kernel_layout),
        )
        out_ch = spec.shape[str(a.kernel_layout).index("O")]
        integer = self._integer_args(call.args[0], decode, spec, out_ch)
        if integer is not None:
            q, table, oscale, zero = integer
            return self.builder_.call_te(
                lambda x, p, t, o: lut_conv_int_compute(x, p, t, o, spec, x_zero=zero, **kw),
                q, decode.args[0], table, oscale,
                primfunc_name_hint="lut_conv_int",
            )  # fmt: skip
        return self.builder_.call_te(
            lambda x, p, lv: lut_conv_compute(x, p, lv, spec, **kw),
            call.args[0],
            decode.args[0],
            decode.args[1],
            primfunc_name_hint="lut_conv",
        )


def _is_2d_transpose(call) -> bool:
    axes = call.attrs.axes
    return len(call.args[0].ty.shape) == 2 and (axes is None or [int(a) for a in axes] == [1, 0])


@tvm.transform.module_pass(opt_level=0, name="LegalizeLUT")
class LegalizeLUT:
    """Rewrite annotated conv / matmul into LUT kernels that read packed codes."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        legalizer = _Legalizer(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                legalizer.builder_.update_func(gv, legalizer.visit_expr(func))
        return relax.transform.DeadCodeElimination()(legalizer.builder_.get())
