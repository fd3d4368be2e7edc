"""Small helpers the passes share to read a Relax function's dataflow."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor


def bindings_and_uses(func: relax.Function) -> tuple[dict, dict]:
    """``(var -> bound value, var -> number of uses)`` over every binding of ``func``
    (dataflow vars included)."""
    bound, uses = {}, {}

    @expr_functor.visitor
    class _Scan(PyExprVisitor):
        def visit_var_binding_(self, binding):
            bound[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def visit_var_(self, var):
            uses[var] = uses.get(var, 0) + 1

        def visit_dataflow_var_(self, var):
            uses[var] = uses.get(var, 0) + 1

    _Scan().visit_expr(func)
    return bound, uses


LAYER_OPS = ("relax.nn.conv2d", "relax.nn.conv1d", "relax.matmul")
"""The layers whose constant weights tvmq quantizes and legalizes into LUT kernels."""


def static_shape(expr) -> tuple[int, ...] | None:
    """The static shape of a tensor-typed expression (None when it has none)."""
    shape = getattr(expr.ty, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def op_name(value) -> str:
    """The operator name of a call to a ``tvm.ir.Op`` (``""`` for anything else)."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return ""


@expr_functor.mutator
class _ReplaceConstants(PyExprMutator):
    def __init__(self, mod, new: dict):
        super().__init__(mod)
        self.new = new

    def visit_generic_const_(self, const):
        return self.new.get(const, const)


def replace_constants(mod: tvm.IRModule, new: dict) -> tvm.IRModule:
    """``mod`` with the constants of ``main`` that are keys of ``new`` replaced by their
    values (float32 arrays or Relax expressions)."""
    if not new:
        return mod
    new = {
        c: v if isinstance(v, relax.Expr) else relax.const(v.astype("float32"), "float32")
        for c, v in new.items()
    }
    func = mod["main"]
    mutator = _ReplaceConstants(mod, new)
    mutator.builder_.update_func(mod.get_global_var("main"), mutator.visit_expr(func))
    return mutator.builder_.get()
