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
from ..kernels.integer import INPLACE_ATTR

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
        self.packed: dict = {}  # weight scratch -> (packed name, stride, block), see _packable
        self.filling = False  # printing a statement that fills a packed scratch

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
            sat = _int8_clamp(e)
            if sat is not None:  # the requantize clamp: one SSAT on Arm
                x, lo = sat
                inner = f"tvmq_sat_s8({self.expr(x)})"
                return inner if lo == -128 else f"tvmq_max_i32({inner}, {lo})"
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
    def _multi_dot(self, loop, depth: int) -> bool:
        """Print a block of output channels (a loop of extent 2 or 4 from the MCU
        schedule's channel split) as one ``tvmq_dot{2,4}_s8`` per reduction step, then
        the epilogue per channel; False (nothing printed) when ``loop`` is not one::

            for o in range(E):                     [loop-invariant binds]
                for r...: (dot over k)             for r...: tvmq_dotE_s8(&a[p], &b[q0],
                    acc[i0 + o] += a[p + k] *                     stride, n, &acc[i0])
                                   b[q0 + o * stride + k]      for o in range(E):
                epilogue(acc[i0 + o])  -->                       epilogue(acc[i0 + o])

        Moving the epilogues after all dot products is valid because they write neither
        the operands nor the accumulators (checked)."""
        found = _multi_dot_pattern(loop)
        if found is None:
            return False
        binds, nest, (dbinds, acc, (a_buf, a_base), (b_buf, _)), epilogue, (b0, stride, i0) = found
        for bind in binds:
            self.stmt(bind, depth)
        for lp in nest[:-1]:
            self._for_header(lp, depth)
            depth += 1
        for bind in dbinds:
            self.stmt(bind, depth)
        a_arg, acc_arg = f"&{self.buf(a_buf)}[{self.expr(a_base)}]", f"&{self.buf(acc.buffer)}"
        n = self.expr(nest[-1].extent)
        if b_buf in self.packed:  # the block's weights as SMLAD-ready words: 2 per 4 weights
            self.emit(
                f"tvmq_dot{int(loop.extent)}p_s8({a_arg}, &{self.packed[b_buf][0]}"
                f"[{self._word_offset(b0, int(loop.extent))}], {n}, {acc_arg}[{self.expr(i0)}]);",
                depth,
            )
        else:
            self.emit(
                f"tvmq_dot{int(loop.extent)}_s8({a_arg}, &{self.buf(b_buf)}[{self.expr(b0)}], "
                f"{stride}, {n}, {acc_arg}[{self.expr(i0)}]);",
                depth,
            )
        for _ in nest[:-1]:
            depth -= 1
            self.emit("}", depth)
        self._for_header(loop, depth)
        for st in epilogue:
            self.stmt(st, depth + 1)
        self.emit("}", depth)
        return True

    def _word_offset(self, b0, block: int) -> str:
        """Word of the packed scratch where weight ``b0`` of the block's first channel is:
        ``block / 2`` words per weight (``2 * block`` words per 4 weights)."""
        if _is_zero(b0):
            return "0"
        return self.expr(b0) if block == 2 else f"({self.expr(b0)}) * {block // 2}"

    def _alloc_packed(self, b, name: str, nbytes: int, depth: int) -> None:
        """The SMLAD-ready copy of weight scratch ``b`` (int16 pairs: twice its bytes) in
        the workspace, word-aligned as ``LDRD`` needs (not on the stack: it is too big for
        registers, and the workspace is planned RAM)."""
        pname = self.name(object(), name + "_packed")
        self.emit(
            f"uint32_t* restrict {pname} = (uint32_t*)({self.ws_name} + {self.workspace});",
            depth,
        )
        self.packed[b] = (pname, *self.packed[b][1:])
        self.workspace += -(-2 * nbytes // ALIGN) * ALIGN

    def _for_header(self, loop, depth: int) -> None:
        v = self.name(loop.loop_var)
        lo, ext = self.expr(loop.min), self.expr(loop.extent)
        end = ext if lo == "0" else f"{lo} + {ext}"
        self.emit(
            f"for ({ctype(dtype_of(loop.loop_var))} {v} = {lo}; {v} < {end}; ++{v}) {{", depth
        )

    def emit(self, text: str, depth: int) -> None:
        self.lines.append("  " * depth + text)

    def stmt(self, s, depth: int) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for x in s.seq:
                # after the outermost statement filling a packed scratch (the decode loop
                # nest, which writes it and does not read it): repack it
                fills = [] if self.filling else [
                    (buf, entry) for buf, entry in self.packed.items()
                    if any(w is not None and w.same_as(buf) for w in _stores(x))
                    and not _reads(x, buf)
                ]  # fmt: skip
                outer, self.filling = self.filling, self.filling or bool(fills)
                self.stmt(x, depth)
                self.filling = outer
                for buf, (pname, stride, blocks) in fills:
                    self.emit(f"tvmq_pack{blocks}_s8({self.buf(buf)}, {pname}, {stride});", depth)
        elif kind == "For" and self._multi_dot(s, depth):
            return
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
            self._for_header(s, depth)
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
                if b in self.packed:
                    self._alloc_packed(b, name, nbytes, depth)
                return
            self.emit(
                f"{ctype(b.dtype)}* restrict {name} = ({ctype(b.dtype)}*)({self.ws_name} + "
                f"{self.workspace});",
                depth,
            )
            self.buffers[b] = name
            self.workspace += -(-nbytes // ALIGN) * ALIGN
            if b in self.packed:
                self._alloc_packed(b, name, nbytes, depth)
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


def _int8_clamp(e):
    """``(x, lo)`` for the int32 clamp ``max(min(x, 127), lo)`` with ``lo >= -128`` (what
    every requantize ends in), else None."""
    if type(e).__name__ != "Max" or dtype_of(e) != "int32":
        return None
    inner, lo = e.a, e.b
    if type(lo).__name__ != "IntImm" or type(inner).__name__ != "Min":
        return None
    hi = inner.b
    if type(hi).__name__ != "IntImm" or int(hi.value) != 127 or int(lo.value) < -128:
        return None
    return inner.a, int(lo.value)


def _linear_in(e, var):
    """``(rest, c)`` with ``e == rest + c * var`` (``rest`` free of ``var``, ``c`` an
    int), or None when ``e`` is not of that form (adds, subtractions and products with
    constants only)."""
    if not _uses(e, var):
        return e, 0
    kind = type(e).__name__
    if kind == "Var":
        return tirx.const(0, dtype_of(e)), 1
    if kind in ("Add", "Sub"):
        a, b = _linear_in(e.a, var), _linear_in(e.b, var)
        if a is None or b is None:
            return None
        sign = 1 if kind == "Add" else -1
        rest = a[0] if _is_zero(b[0]) else (a[0] + b[0] if kind == "Add" else a[0] - b[0])
        return rest, a[1] + sign * b[1]
    if kind == "Mul":
        for x, k in ((e.a, e.b), (e.b, e.a)):
            if type(k).__name__ == "IntImm":
                inner = _linear_in(x, var)
                if inner is None:
                    return None
                return inner[0] * k, inner[1] * int(k.value)
    return None


def _stores(stmt) -> list:
    """Buffers a statement stores to (``BufferStore`` anywhere inside)."""
    out = []

    def walk(s):
        kind = type(s).__name__
        if kind == "SeqStmt":
            for x in s.seq:
                walk(x)
        elif kind in ("For",):
            walk(s.body)
        elif kind == "IfThenElse":
            walk(s.then_case)
            if s.else_case is not None:
                walk(s.else_case)
        elif kind == "BufferStore":
            out.append(s.buffer)
        elif kind not in ("Bind", "Evaluate"):
            out.append(None)  # unknown statement: treated as writing anything

    walk(stmt)
    return out


def _multi_dot_pattern(loop):
    """The parts of a channel-block loop (see ``_Printer._multi_dot``): ``(binds, nest,
    dot, epilogue, (b0, stride, i0))`` with ``nest`` the reduction loops (the last one the
    dot loop), ``dot`` what :func:`_dot_pattern` returns for it, and the weight operand
    ``b0 + o * stride``, the accumulator ``i0 + o``; or None."""
    o = loop.loop_var
    if not (_is_zero(loop.min) and type(loop.extent).__name__ == "IntImm"):
        return None
    if int(loop.extent) not in MULTI_DOT:
        return None
    seq = list(loop.body.seq) if type(loop.body).__name__ == "SeqStmt" else [loop.body]
    j = next((i for i, st in enumerate(seq) if type(st).__name__ == "For"), None)
    for st in seq[: j or 0]:  # loop-invariant binds and buffer views, printed before the block
        kind = type(st).__name__
        if not (kind == "DeclBuffer" or (kind == "Bind" and not _uses(st.value, o))):
            return None
    if j is None:
        return None
    nest = [seq[j]]
    while (dot := _dot_pattern(nest[-1])) is None:
        if type(nest[-1].body).__name__ != "For":
            return None
        nest.append(nest[-1].body)
    dbinds, acc, a, b = dot
    if any(_uses(lp.min, o) or _uses(lp.extent, o) for lp in nest):
        return None
    if any(_uses(bd.value, o) for bd in dbinds) or _uses(a[1], o):
        return None
    lin_b, lin_acc = _linear_in(b[1], o), _linear_in(acc.indices[0], o)
    if lin_b is None or lin_acc is None or lin_acc[1] != 1 or lin_b[1] <= 0:
        return None
    epilogue = seq[j + 1 :]
    operands = (a[0], b[0], acc.buffer)
    for st in epilogue:
        if type(st).__name__ == "For" or any(
            w is None or any(w.same_as(x) for x in operands) for w in _stores(st)
        ):
            return None
    return seq[:j], nest, dot, epilogue, (lin_b[0], lin_b[1], lin_acc[0])


_CHILDREN = ("seq", "body", "then_case", "else_case", "condition", "value", "indices", "a", "b",
             "args", "true_value", "false_value", "min", "extent")  # fmt: skip


def _walk(node, visit) -> None:
    """Call ``visit`` on ``node`` and every statement / expression below it (the kinds the
    printer handles; TVM 0.27 has no Python post-order visitor for TIR)."""
    visit(node)
    for field in _CHILDREN:
        child = getattr(node, field, None) if not isinstance(node, list | tuple) else None
        if child is None or isinstance(child, str | int | float):
            continue
        if isinstance(child, tvm.ir.Array | list | tuple):
            for c in child:
                _walk(c, visit)
        elif isinstance(child, tvm.runtime.Object):
            _walk(child, visit)


def _reads(stmt, buf) -> bool:
    """Whether ``stmt`` loads from ``buf``."""
    found = []

    def visit(node):
        kind = type(node).__name__
        if kind in ("BufferLoad", "TensorLoad"):
            src = node.buffer if kind == "BufferLoad" else node.source
            found.append(src.same_as(buf))

    _walk(stmt, visit)
    return any(found)


def _packable(body) -> dict:
    """``{weight scratch: (None, stride, block)}`` for the int8 scratch buffers (allocated
    in the function) that every multi-channel dot product reads in whole words: block 2 or
    4, constant stride (elements per channel, the whole scratch is ``block * stride``),
    each dot's length and weight offset multiples of 4. The printer then repacks each such
    scratch once per channel block, after its decode, into SMLAD-ready words (the int16
    pairs ``(w0, w2), (w1, w3)`` of every 4 weights, the block's channels interleaved;
    ``tvmq_pack{E}_s8``), so the inner loop loads each channel's pairs instead of
    sign-extending the weights again at every pixel (``tvmq_dot{E}p_s8``)."""
    allocs, sites = {}, {}

    def visit(node, loops):
        kind = type(node).__name__
        if kind == "AllocBuffer":
            allocs[node.buffer] = node.buffer
        elif kind == "For":
            found = _multi_dot_pattern(node)
            if found is not None:
                _, nest, (_, _, _, (b_buf, _)), _, (b0, stride, _) = found
                # uses of one decoded block: the enclosing loops that do not refill it
                reuse = math.prod(
                    int(lp.extent) if type(lp.extent).__name__ == "IntImm" else 2
                    for lp in loops
                    if not any(w is not None and w.same_as(b_buf) for w in _stores(lp))
                )
                sites.setdefault(b_buf, []).append((int(node.extent), stride, b0, nest[-1], reuse))
                return
        for field in ("seq", "body", "then_case", "else_case"):
            child = getattr(node, field, None)
            inner = [*loops, node] if kind == "For" else loops
            if isinstance(child, tvm.ir.Array | list | tuple):
                for c in child:
                    visit(c, inner)
            elif child is not None and isinstance(child, tvm.runtime.Object):
                visit(child, inner)

    visit(body, [])
    ana = tvm.sym.Analyzer()

    def multiple_of_4(e) -> bool:
        m = ana.modular_set(e)  # e = coeff * k + base
        return int(m.coeff) % 4 == 0 and int(m.base) % 4 == 0

    out = {}
    for buf, uses in sites.items():
        if buf not in allocs or str(buf.dtype) != "int8":
            continue
        numel = math.prod(int(x) for x in buf.shape)
        blocks, stride = uses[0][0], uses[0][1]
        ok = stride % 4 == 0 and numel == blocks * stride
        # the repack costs about what 2.5 uses of the block save: a dense layer at batch 1
        # (one use) would pay it for nothing, and hold twice the scratch
        ok = ok and sum(u[4] for u in uses) >= PACK_MIN_REUSE
        for e, st, b0, dot, _ in uses:
            ext = dot.extent
            ok = ok and e == blocks and st == stride and type(ext).__name__ == "IntImm"
            ok = ok and int(ext) % 4 == 0 and multiple_of_4(b0)
        if ok:
            out[buf] = (None, stride, blocks)
    return out


def _is_zero(e) -> bool:
    return type(e).__name__ == "IntImm" and int(e.value) == 0


PACK_MIN_REUSE = 4
"""Repack a channel block's weights only when its dot products run at least this often
per decode (output pixels; see :func:`_packable`)."""

MULTI_DOT = (2, 4)
"""Channel-block sizes with a ``tvmq_dot{E}_...`` in :data:`C_PRELUDE`."""


def print_function(name: str, func: tirx.PrimFunc) -> CFunction:
    """Print one lowered (flattened, unpacked) PrimFunc as a C function."""
    p = _Printer()
    params, decls = [], []
    n_params = len(func.params)
    # an input the output may overwrite (a fused residual): that pair may alias
    shared = func.attrs.get(INPLACE_ATTR) if func.attrs is not None else None
    aliased = set() if shared is None else {int(shared), n_params - 1}
    for i, prm in enumerate(func.params):
        buf = prm  # 0.27: parameters are buffer-typed vars
        dtype = str(buf.dtype)
        numel = math.prod(int(x) for x in buf.shape)
        cname = p.name(buf, prm.name)
        p.buffers[buf] = cname
        const = "const " if i < n_params - 1 else ""
        restrict = "" if i in aliased else " restrict"
        decls.append(f"{const}{ctype(dtype)}*{restrict} {cname}")
        params.append((cname, dtype, numel))
    p.packed = _packable(func.body)
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


def _dot_source(n_ch: int) -> str:
    """C of ``tvmq_dot_s8`` (``n_ch`` 1) or ``tvmq_dot{n_ch}_s8``: int8 times int8.

    With the DSP extension every four inputs are one word, sign-extended once into the
    even and odd int16 pairs (``SXTB16``) and shared by all channels; each channel's
    weight word is split the same way, so a channel costs one load, two ``SXTB16`` and
    two ``SMLAD`` per four products."""
    wt = "int8_t"
    ch = range(n_ch)
    one = n_ch == 1
    name = f"tvmq_dot{'' if one else n_ch}_s8"
    if one:
        head = (
            f"TVMQ_NOVEC static inline int32_t {name}(const int8_t* a, const {wt}* b, "
            "int32_t n, int32_t acc) {"
        )
        init = ["int32_t s0 = acc;", "const " + wt + "* b0 = b;"]
    else:
        head = (
            f"TVMQ_NOVEC static inline void {name}(const int8_t* a, const {wt}* b, int32_t stride, "
            "int32_t n, int32_t* acc) {"
        )
        init = [
            "int32_t " + ", ".join(f"s{c} = acc[{c}]" for c in ch) + ";",
            f"const {wt} " + ", ".join(f"*b{c} = b + {c} * stride" for c in ch) + ";",
        ]
    body = [head, *("  " + x for x in init), "  int32_t i = 0;"]
    body += [
        "#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP",
        "  for (; i + 4 <= n; i += 4) {",
        "    uint32_t x;",
        "    memcpy(&x, a + i, 4);",
        "    const uint32_t xe = __sxtb16(x), xo = tvmq_sxtb16_ror8(x);",
    ]
    for c in ch:
        body += [
            f"    uint32_t w{c};",
            f"    memcpy(&w{c}, b{c} + i, 4);",
            f"    s{c} = __smlad(xe, __sxtb16(w{c}), s{c});",
            f"    s{c} = __smlad(xo, tvmq_sxtb16_ror8(w{c}), s{c});",
        ]
    body += ["  }", "#endif", "  for (; i < n; ++i) {", "    const int32_t x = a[i];"]
    body += [f"    s{c} += x * b{c}[i];" for c in ch]
    body += ["  }"]
    body += ["  return s0;"] if one else [f"  acc[{c}] = s{c};" for c in ch]
    return "\n".join([*body, "}", ""])


def _packed_dot_source(n_ch: int) -> str:
    """C of ``tvmq_pack{n_ch}_s8`` and ``tvmq_dot{n_ch}p_s8`` (see :func:`_packable`):
    per 4 inputs and channel, one load of the input word shared by the block, two weight
    words (adjacent: one ``LDRD``) and two ``SMLAD``. Word ``2 * (g * E + c) + h`` holds
    weights ``4g + h`` and ``4g + h + 2`` of channel ``c`` as int16 (low, high)."""
    ch = range(n_ch)
    words = 2 * n_ch
    pack = [
        f"static inline void tvmq_pack{n_ch}_s8(const int8_t* b, uint32_t* out, int32_t stride) {{",
        "  for (int32_t g = 0; g < stride; g += 4) {",
        f"    for (int32_t c = 0; c < {n_ch}; ++c) {{",
        "      const int8_t* s = b + c * stride + g;",
        "#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP",
        "      uint32_t x;",
        "      memcpy(&x, s, 4);",
        "      *out++ = __sxtb16(x);",
        "      *out++ = tvmq_sxtb16_ror8(x);",
        "#else",
        "      *out++ = (uint32_t)(uint16_t)s[0] | ((uint32_t)(uint16_t)s[2] << 16);",
        "      *out++ = (uint32_t)(uint16_t)s[1] | ((uint32_t)(uint16_t)s[3] << 16);",
        "#endif",
        "    }",
        "  }",
        "}",
    ]
    dot = [
        f"TVMQ_NOVEC static inline void tvmq_dot{n_ch}p_s8(const int8_t* a, const uint32_t* w, "
        "int32_t n, int32_t* acc) {",
        "  int32_t " + ", ".join(f"s{c} = acc[{c}]" for c in ch) + ";",
        f"  for (int32_t i = 0; i < n; i += 4, w += {words}) {{",
        "#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP",
        "    uint32_t x;",
        "    memcpy(&x, a + i, 4);",
        "    const uint32_t xe = __sxtb16(x), xo = tvmq_sxtb16_ror8(x);",
    ]
    for c in ch:
        dot += [
            f"    uint32_t we{c}, wo{c};",  # both words of the channel in one LDRD
            f'    __asm__("ldrd %0, %1, [%2, #{8 * c}]" : "=r"(we{c}), "=r"(wo{c})'
            f' : "r"(w), "m"(*(const uint32_t(*)[2])(w + {2 * c})));',
            f"    s{c} = __smlad(xe, we{c}, s{c});",
            f"    s{c} = __smlad(xo, wo{c}, s{c});",
        ]
    dot += [
        "#else",
        "    const int32_t x0 = a[i], x1 = a[i + 1], x2 = a[i + 2], x3 = a[i + 3];",
    ]
    for c in ch:
        e, o = f"w[{2 * c}]", f"w[{2 * c + 1}]"
        dot += [
            f"    s{c} += x0 * (int16_t){e} + x2 * (int16_t)({e} >> 16)"
            f" + x1 * (int16_t){o} + x3 * (int16_t)({o} >> 16);"
        ]
    dot += ["#endif", "  }", *(f"  acc[{c}] = s{c};" for c in ch), "}", ""]
    return "\n".join([*pack, "", *dot])


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
#if defined(__ARM_FEATURE_DSP) || defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif

/* GCC 12.2's loop vectorizer (x86-64, -O2) miscompiled tvmq_dot4_s8's scalar loop once
   inlined into a float-epilogue kernel of the KWS model (-O0/-O1, UBSan builds and
   -fno-tree-loop-vectorize all agree with TVM's LLVM build): off Arm the dot helpers are
   kept scalar. (Not on Arm: GCC does not inline a function whose optimize attribute
   differs, which would cost a call per pixel on the MCU.) */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__arm__)
#define TVMQ_NOVEC __attribute__((optimize("no-tree-loop-vectorize")))
#else
#define TVMQ_NOVEC
#endif

/* x saturated to [-128, 127] (SSAT on Arm); max of two int32 */
static inline int32_t tvmq_sat_s8(int32_t x) {
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
  return __ssat(x, 8);
#else
  return x < -128 ? -128 : (x > 127 ? 127 : x);
#endif
}
static inline int32_t tvmq_max_i32(int32_t a, int32_t b) { return a > b ? a : b; }

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* bytes 1 and 3 of x sign-extended to two int16 (GCC does not fold the rotate itself) */
static inline uint32_t tvmq_sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}
#endif

"""

C_PRELUDE += (
    "\n/* acc + sum(a[i] * b[i]) (tvmq_dot_*), and acc[c] += sum(a[i] * b[c * stride + i])\n"
    "   for a block of 2 or 4 output channels reading one input row (tvmq_dot2_*, 4_*). */\n"
)
C_PRELUDE += "\n".join(_dot_source(n) for n in (1, *MULTI_DOT))
C_PRELUDE += "\n".join(_packed_dot_source(n) for n in MULTI_DOT)
