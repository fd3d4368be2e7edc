"""Plain C for lowered TIR kernels: raw pointer arguments, no TVM runtime, no allocation.

TVM 0.27's C backend wraps every function in the packed-function ABI (``TVMFFIAny``
argument checks, FFI error calls) and ``MakeUnpackedAPI`` is gone. tvmq therefore lowers
the fused kernels with TVM's TIR pipeline minus ``MakePackedAPI`` (and the two storage
legalizers that assert it ran) and prints the result itself::

    void fused_lut_conv_int_add_relu_quantize1(const int8_t* restrict lv1,
        const uint8_t* restrict param_0, ..., int8_t* restrict out, uint8_t* restrict ws);

The last parameter of a function that needs scratch memory (``alloc_buffer`` stages of an
untuned schedule) is a workspace pointer; :func:`workspace_bytes` says how large, and the
AOT executor places it in the static arena. Inputs are ``const``; the last tensor
parameter is the output. Code generation is controlled, never regex-patched: an unknown TIR
node raises :class:`CodegenError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
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


def lower_for_c(mod: tvm.IRModule) -> tvm.IRModule:
    """TVM's TIR pipeline for the C target without the packed-function API."""
    target = tvm.target.Target("c")
    funcs = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc):
            funcs[gv.name_hint] = f.with_attr("global_symbol", gv.name_hint).with_attr(
                "target", target
            )
    disabled = ["tirx.MakePackedAPI", "tirx.FP8StorageLegalize", "tirx.BF16StorageLegalize"]
    with target, tvm.transform.PassContext(opt_level=3, disabled_pass=disabled):
        pipeline = tvm.tirx.get_tir_pipeline("default")
        pipeline = pipeline[0] if isinstance(pipeline, tuple) else pipeline
        return pipeline(tvm.IRModule(funcs))


def generate_c(mod: tvm.IRModule) -> list[CFunction]:
    """Plain C for every PrimFunc of ``mod`` (e.g. :meth:`QuantizedModel.fused`), sorted by name."""
    lowered = lower_for_c(mod)
    return [print_function(gv.name_hint, f) for gv, f in sorted(
        lowered.functions_items(), key=lambda kv: kv[0].name_hint
    )]  # fmt: skip


C_PRELUDE = """/* Generated by tvmq: plain C, no TVM runtime. */
#include <math.h>
#include <stdint.h>
"""
