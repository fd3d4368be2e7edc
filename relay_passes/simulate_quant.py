"""SimulateQuant: fake-quant module, every ``quant.lut_decode`` replaced by its float value.

The result computes in float with exactly the quantized weights, using TVM's stock
kernels: the fast path for accuracy evaluation, and the reference the LUT kernels of
:class:`LegalizeLUT` must agree with (float path: 1e-5 relative). The decoded constant is
substituted at each use, as the frontends write weights.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from tvmq.kernels import lut_decode_reference
from tvmq.ops import is_lut_decode, spec_of


@expr_functor.mutator
class _Simulator(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.decoded: dict = {}

    def visit_var_binding_(self, binding):
        value = binding.value
        if is_lut_decode(value):
            weight = lut_decode_reference(
                value.args[0].value.numpy(), value.args[1].value.numpy(), spec_of(value)
            )
            self.decoded[binding.var] = relax.const(weight, "float32")
            return  # the binding disappears; uses get the constant
        super().visit_var_binding_(binding)

    def visit_var_(self, var):
        const = self.decoded.get(var)
        return const if const is not None else super().visit_var_(var)

    def visit_dataflow_var_(self, var):
        const = self.decoded.get(var)
        return const if const is not None else super().visit_dataflow_var_(var)


@tvm.transform.module_pass(opt_level=0, name="SimulateQuant")
class SimulateQuant:
    """Replace ``quant.lut_decode`` of constants by the decoded float32 constants."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        sim = _Simulator(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                sim.builder_.update_func(gv, sim.visit_expr(func))
        return sim.builder_.get()
