"""Plain C for lowered TIR kernels: raw pointer arguments, no TVM runtime, no allocation.

TVM 0.27's C backend wraps every function in the packed-function ABI (``TVMFFIAny``
argument checks, FFI error calls) and ``MakeUnpackedAPI`` is gone. tvmq therefore lowers
the fused kernels with TVM's TIR pipeline minus ``MakePackedAPI`` (and the two storage
legalizers that assert it ran) and prints the result itself::

    void fused_lut_conv_int_add_relu_quantize1(const int8_t* restrict lv1,
        const uint8_t* restrict param_0, ..., int8_t* restrict out, uint8_t* restrict ws);

Scratch buffers of at most :data:`LOCAL_MAX_BYTES` are C locals. The last parameter of a
function that needs more scratch memory (``alloc_buffer`` stages of an untuned schedule) is
a workspace pointer; :func:`workspace_bytes` says how large, and the
AOT executor places it in the static arena. Inputs are ``const``; the last tensor
parameter is the output. Code generation is controlled, never regex-patched: an unknown TIR
node raises :class:`CodegenError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx

from ..errors import TvmqError

_CTYPES = {
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "uint16": "uint16_t",
    "int32": "int32_t",
    "uint32": "uint32_t",
    "int64": "int64_t",
    "uint64": "uint64_t",
    "float32": "float",
    "float64": "double",
    "bool": "int32_t",
}
_BINOPS = {
    "Add": "+",
    "Sub": "-",
    "Mul": "*",
    "EQ": "==",
    "NE": "!=",
    "LT": "<",
    "LE": "<=",
    "GT": ">",
    "GE": ">=",
    "And": "&&",
    "Or": "||",
    "BitwiseAnd": "&",
    "BitwiseOr": "|",
    "BitwiseXor": "^",
    "RShift": ">>",
    "LShift": "<<",
}
# Call ops by the last component of their name (0.27 spells them tirx.* or prim.*).
_CALLS = {
    "shift_right": ">>",
    "shift_left": "<<",
    "bitwise_and": "&",
    "bitwise_or": "|",
    "bitwise_xor": "^",
}
_MATH = {"floor": "floor", "ceil": "ceil", "fabs": "fabs", "exp": "exp"}
ALIGN = 16
LOCAL_MAX_BYTES = 256
"""Scratch buffers up to this size are C locals (an accumulator becomes a register);
larger ones live in the workspace the AOT executor places in its arena."""


class CodegenError(TvmqError):
    """A TIR construct the plain-C printer does not handle."""


def dtype_of(x) -> str:
    """The dtype of a TIR scalar expression or variable (0.27 keeps it on ``.ty``)."""
    ty = getattr(x, "ty", None)
    if ty is not None and hasattr(ty, "dtype"):
        return str(ty.dtype)
    return str(x.dtype)


def ctype(dtype) -> str:
    dtype = str(dtype)
    if dtype not in _CTYPES:
        raise CodegenError(f"no C type for TIR dtype {dtype}")
    return _CTYPES[dtype]


@dataclass(frozen=True)
class CFunction:
    """One printed kernel.

    Attributes
    ----------
    name : str
    params : list of (name, dtype, numel)
        Tensor parameters in call order; the last one is the output.
    workspace : int
        Scratch bytes the function needs (0: no workspace parameter).
    source : str
        The C definition.
    """

    name: str
    params: list
    workspace: int
    source: str

    def prototype(self) -> str:
        return self.source.split("{", 1)[0].strip() + ";"


class _Printer:
    def __init__(self):
        self.lines: list[str] = []
        self.names: dict = {}  # tirx Var -> C identifier
        self.buffers: dict = {}  # buffer var (0.27: buffers are vars) -> C pointer name
        self.workspace = 0
        self.ws_name = "tvmq_ws"

    # -- names ---------------------------------------------------------------------
    def name(self, var, hint: str | None = None) -> str:
        if var not in self.names:
            base = "".join(c if c.isalnum() else "_" for c in (hint or var.name)) or "v"
            used = set(self.names.values())
            cand, i = base, 1
            while cand in used:
                cand, i = f"{base}_{i}", i + 1
            self.names[var] = cand
        return self.names[var]

    # -- expressions ---------------------------------------------------------------
    def expr(self, e) -> str:
        kind = type(e).__name__
        if kind == "IntImm":
            v = int(e.value)
            if dtype_of(e) == "bool":
                return "1" if v else "0"
            suffix = "LL" if dtype_of(e) in ("int64", "uint64") else ""
            return f"({ctype(dtype_of(e))}){v}{suffix}" if suffix else str(v)
        if kind == "FloatImm":
            v = float(e.value)
            if math.isinf(v):
                return "INFINITY" if v > 0 else "-INFINITY"
            text = repr(v)
            return f"{text}f" if dtype_of(e) == "float32" else text
        if kind == "Var":
            return self.names.get(e) or self.name(e)
        if kind in _BINOPS:
            return f"({self.expr(e.a)} {_BINOPS[kind]} {self.expr(e.b)})"
        if kind in ("Min", "Max"):
            a, b = self.expr(e.a), self.expr(e.b)
            op = "<" if kind == "Min" else ">"
            return f"(({a}) {op} ({b}) ? ({a}) : ({b}))"
        if kind in ("FloorDiv", "FloorMod", "Div", "Mod"):
            # Lowered kernels only divide non-negative indices by positive constants.
            op = "/" if kind in ("FloorDiv", "Div") else "%"
            return f"({self.expr(e.a)} {op} {self.expr(e.b)})"
        if kind == "Not":
            return f"(!{self.expr(e.a)})"
        if kind == "BitwiseNot":
            return f"(~{self.expr(e.a)})"
        if kind == "Cast":
            return f"(({ctype(dtype_of(e))})({self.expr(e.value)}))"
        if kind == "Select":
            return (
                f"(({self.expr(e.condition)}) ? ({self.expr(e.true_value)}) : "
                f"({self.expr(e.false_value)}))"
            )
        if kind == "BufferLoad":
            return f"{self.buf(e.buffer)}[{self.index(e.indices)}]"
        if kind == "TensorLoad":  # 0.27's load from a buffer var
            return f"{self.buf(e.source)}[{self.index(e.indices)}]"
        if kind == "Call":
            op = e.op.name.rsplit(".", 1)[-1]
            if op in _CALLS:
                return f"({self.expr(e.args[0])} {_CALLS[op]} {self.expr(e.args[1])})"
            if op in _MATH:
                fn = _MATH[op] + ("f" if dtype_of(e) == "float32" else "")
                return f"{fn}({self.expr(e.args[0])})"
            if op == "if_then_else":
                c, t, f = (self.expr(a) for a in e.args)
                return f"(({c}) ? ({t}) : ({f}))"
            raise CodegenError(f"TIR call {e.op.name} has no plain-C form")
        raise CodegenError(f"TIR expression {kind} has no plain-C form: {e}")

    def index(self, indices) -> str:
        if len(indices) != 1:
            raise CodegenError("buffers must be flattened before printing")
        return self.expr(indices[0])

    def buf(self, buffer) -> str:
        if buffer not in self.buffers:
            raise CodegenError(f"buffer {buffer.name} is used before it is declared")
        return self.buffers[buffer]

    # -- statements ----------------------------------------------------------------
    def emit(self, text: str, depth: int) -> None:
        self.lines.append("  " * depth + text)

    def stmt(self, s, depth: int) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for x in s.seq:
                self.stmt(x, depth)
        elif kind == "For":
            dot = _dot_pattern(s)
            if dot is not None:
                binds, acc, a, b = dot
                for bind in binds:  # loop-invariant lets CSE left inside the loop
                    self.stmt(bind, depth)
                store = f"{self.buf(acc.buffer)}[{self.index(acc.indices)}]"
                self.emit(
                    f"{store} = tvmq_dot_s8(&{self.buf(a[0])}[{self.expr(a[1])}], "
                    f"&{self.buf(b[0])}[{self.expr(b[1])}], {self.expr(s.extent)}, {store});",
                    depth,
                )
                return
            v = self.name(s.loop_var)
            t = ctype(dtype_of(s.loop_var))
            lo, ext = self.expr(s.min), self.expr(s.extent)
            end = ext if lo == "0" else f"{lo} + {ext}"
            self.emit(f"for ({t} {v} = {lo}; {v} < {end}; ++{v}) {{", depth)
            self.stmt(s.body, depth + 1)
            self.emit("}", depth)
        elif kind == "Bind":
            v = self.name(s.var)
            self.emit(f"const {ctype(dtype_of(s.var))} {v} = {self.expr(s.value)};", depth)
        elif kind == "BufferStore":
            self.emit(
                f"{self.buf(s.buffer)}[{self.index(s.indices)}] = {self.expr(s.value)};", depth
            )
        elif kind == "IfThenElse":
            self.emit(f"if ({self.expr(s.condition)}) {{", depth)
            self.stmt(s.then_case, depth + 1)
            if s.else_case is not None:
                self.emit("} else {", depth)
                self.stmt(s.else_case, depth + 1)
            self.emit("}", depth)
        elif kind == "DeclBuffer":
            # a flat view of an existing buffer: same pointer (dtype checked)
            data = s.data
            if not (type(data).__name__ == "Call" and data.op.name == "tirx.buffer_data"):
                raise CodegenError(f"DeclBuffer over {data} has no plain-C form")
            src = data.args[0]
            if str(src.dtype) != str(s.buffer.dtype):
                raise CodegenError(f"view {s.buffer.name} changes dtype of {src.name}")
            self.buffers[s.buffer] = self.buf(src)
        elif kind == "AllocBuffer":
            b = s.buffer
            numel = math.prod(int(x) for x in b.shape)
            nbytes = numel * tvm.DataType(str(b.dtype)).bits // 8
            name = self.name(b, b.name)
            self.buffers[b] = name
            if nbytes <= LOCAL_MAX_BYTES:  # scalars and small tiles: locals (registers)
                self.emit(f"{ctype(b.dtype)} {name}[{numel}];", depth)
                return
            self.emit(
                f"{ctype(b.dtype)}* restrict {name} = ({ctype(b.dtype)}*)({self.ws_name} + "
                f"{self.workspace});",
                depth,
            )
            self.buffers[b] = name
            self.workspace += -(-nbytes // ALIGN) * ALIGN
        elif kind == "Evaluate":
            value = s.value
            if type(value).__name__ == "IntImm":
                return  # a no-op
            self.emit(f"{self.expr(value)};", depth)
        else:
            raise CodegenError(f"TIR statement {kind} has no plain-C form")


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _unit_stride_base(indices, var):
    """``base`` when the flat index is ``base + var`` (``base`` free of ``var``), else None."""
    if len(indices) != 1:
        return None
    e = indices[0]
    if e.same_as(var):
        return tirx.const(0, dtype_of(var))
    if type(e).__name__ == "Add":
        for base, v in ((e.a, e.b), (e.b, e.a)):
            if v.same_as(var) and not _uses(base, var):
                return base
    return None


def _int8_load(e, var):
    """``(buffer, base)`` for ``int32(x[base + var])`` with int8 ``x``, else None."""
    if type(e).__name__ != "Cast" or dtype_of(e) != "int32":
        return None
    load = e.value
    if type(load).__name__ not in ("BufferLoad", "TensorLoad") or dtype_of(load) != "int8":
        return None
    base = _unit_stride_base(load.indices, var)
    if base is None:
        return None
    return (load.buffer if type(load).__name__ == "BufferLoad" else load.source), base


def _dot_pattern(loop):
    """Instruction selection for an int8 dot product (the LUT kernels' inner loop)::

        for k in range(n): acc[i] = acc[i] + int32(a[p + k]) * int32(b[q + k])

    becomes ``acc[i] = tvmq_dot_s8(&a[p], &b[q], n, acc[i])`` (SMLAD on Cortex-M cores
    with the DSP extension, see :data:`C_PRELUDE`). Loop-invariant ``Bind`` statements
    before the store are allowed (printed before the call). Returns ``(binds, store, a,
    b)`` or None."""
    body, var = loop.body, loop.loop_var
    binds = []
    if type(body).__name__ == "SeqStmt":
        *binds, body = list(body.seq)
        if any(type(b).__name__ != "Bind" or _uses(b.value, var) for b in binds):
            return None
    if type(body).__name__ != "BufferStore" or not _is_zero(loop.min):
        return None
    if dtype_of(body.value) != "int32" or type(body.value).__name__ != "Add":
        return None
    if any(_uses(i, var) for i in body.indices):
        return None
    add = body.value
    for acc, prod in ((add.a, add.b), (add.b, add.a)):
        kind = type(acc).__name__
        if kind not in ("BufferLoad", "TensorLoad") or type(prod).__name__ != "Mul":
            continue
        src = acc.buffer if kind == "BufferLoad" else acc.source
        if not src.same_as(body.buffer) or len(acc.indices) != len(body.indices):
            continue
        if not all(tvm_ffi.structural_equal(x, y) for x, y in zip(acc.indices, body.indices)):
            continue
        a, b = _int8_load(prod.a, var), _int8_load(prod.b, var)
        if a is not None and b is not None:
            return binds, body, a, b
    return None


def _is_zero(e) -> bool:
    return type(e).__name__ == "IntImm" and int(e.value) == 0


def print_function(name: str, func: tirx.PrimFunc) -> CFunction:
    """Print one lowered (flattened, unpacked) PrimFunc as a C function."""
    p = _Printer()
    params, decls = [], []
    n_params = len(func.params)
    for i, prm in enumerate(func.params):
        buf = prm  # 0.27: parameters are buffer-typed vars
        dtype = str(buf.dtype)
        numel = math.prod(int(x) for x in buf.shape)
        cname = p.name(buf, prm.name)
        p.buffers[buf] = cname
        const = "const " if i < n_params - 1 else ""
        decls.append(f"{const}{ctype(dtype)}* restrict {cname}")
        params.append((cname, dtype, numel))
    body_start = len(p.lines)
    p.stmt(func.body, 1)
    body = p.lines[body_start:]
    if p.workspace:
        decls.append(f"uint8_t* restrict {p.ws_name}")
    header = f"void {name}({', '.join(decls)})"
    source = header + " {\n" + "\n".join(body) + "\n}\n"
    return CFunction(name=name, params=params, workspace=p.workspace, source=source)


def lower_for_c(mod: tvm.IRModule, scalar: bool = False) -> tvm.IRModule:
    """TVM's TIR pipeline for the C target without the packed-function API; ``scalar``
    turns vectorized loops (from MetaSchedule candidates) into plain loops."""
    target = tvm.target.Target("c")
    funcs = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc):
            funcs[gv.name_hint] = f.with_attr("global_symbol", gv.name_hint).with_attr(
                "target", target
            )
    disabled = ["tirx.MakePackedAPI", "tirx.FP8StorageLegalize", "tirx.BF16StorageLegalize"]
    config = {"tirx.disable_vectorize": True} if scalar else {}
    with target, tvm.transform.PassContext(opt_level=3, disabled_pass=disabled, config=config):
        pipeline = tvm.tirx.get_tir_pipeline("default")
        pipeline = pipeline[0] if isinstance(pipeline, tuple) else pipeline
        return pipeline(tvm.IRModule(funcs))


def generate_c(mod: tvm.IRModule, schedule: bool = True) -> list[CFunction]:
    """Plain C for every PrimFunc of ``mod`` (e.g. :meth:`QuantizedModel.fused`), sorted by
    name; with ``schedule`` the integer kernels get the MCU schedule first
    (:func:`tvmq.backend.schedule.schedule_mcu`)."""
    if schedule:
        from .schedule import schedule_mcu

        mod = schedule_mcu(mod)
    lowered = lower_for_c(mod, scalar=True)  # tuned kernels may carry vectorized loops
    return [print_function(gv.name_hint, f) for gv, f in sorted(
        lowered.functions_items(), key=lambda kv: kv[0].name_hint
    )]  # fmt: skip


C_PRELUDE = """/* Generated by tvmq: plain C, no TVM runtime. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#endif

/* acc + sum(a[i] * b[i]) over int8: two SMLADs per four pairs where the core has them. */
static inline int32_t tvmq_dot_s8(const int8_t* a, const int8_t* b, int32_t n, int32_t acc) {
  int32_t i = 0;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
  for (; i + 4 <= n; i += 4) {
    uint32_t x, y;
    memcpy(&x, a + i, 4);
    memcpy(&y, b + i, 4);
    acc = __smlad(__sxtb16(x), __sxtb16(y), acc);
    acc = __smlad(__sxtb16((x >> 8) | (x << 24)), __sxtb16((y >> 8) | (y << 24)), acc);
  }
#endif
  for (; i < n; ++i) acc += (int32_t)a[i] * (int32_t)b[i];
  return acc;
}
"""
