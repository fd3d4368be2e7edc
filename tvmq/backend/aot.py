"""Ahead-of-time executor in C: the model as one function over a static arena.

From the fused module (:meth:`tvmq.QuantizedModel.fused`) this generates::

    int tvmq_model_run(const float* input, float* output);

which calls the plain-C kernels (:mod:`tvmq.backend.c_codegen`) in binding order. Weights,
codebooks and other constants become ``static const`` arrays (flash on an MCU); every
intermediate tensor and every kernel workspace gets an offset in one static arena chosen
by :func:`plan_memory`; the model output is written straight into ``output``. No heap, no
TVM runtime. Generated text is deterministic for a given module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..kernels.integer import INPLACE_ATTR
from .c_codegen import ALIGN, C_PRELUDE, CFunction, CodegenError, ctype, generate_c


@dataclass(frozen=True)
class Buffer:
    """A tensor the executor places: its bytes and live range (call indices, inclusive)."""

    name: str
    nbytes: int
    first: int
    last: int


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_memory(buffers: list[Buffer]) -> tuple[dict[str, int], int]:
    """Offsets in one arena such that buffers live at the same time never overlap.

    Candidates: first fit (each buffer at the lowest offset clashing with no placed buffer
    live at the same time) in several orders (largest first, earliest first, longest-lived
    first), and "ping-pong" (buffers defined at even calls at the bottom of an arena of
    :func:`peak_live_bytes`, odd ones at its top), which is optimal for a plain chain where
    first fit can fragment. The smallest valid arena wins. Returns ``(offsets,
    arena_bytes)``; :func:`peak_live_bytes` is the lower bound.
    """
    orders = [
        lambda b: (-b.nbytes, b.first, b.name),
        lambda b: (b.first, -b.nbytes, b.name),
        lambda b: (b.first - b.last, -b.nbytes, b.name),
    ]
    candidates = [_first_fit(sorted(buffers, key=k)) for k in orders]
    peak = peak_live_bytes(buffers)
    pingpong = {b.name: 0 if b.first % 2 == 0 else peak - _align(b.nbytes) for b in buffers}
    if _valid(buffers, pingpong):
        candidates.append((pingpong, peak))
    return min(candidates, key=lambda r: r[1])


def _valid(buffers: list[Buffer], offsets: dict[str, int]) -> bool:
    for i, a in enumerate(buffers):
        if offsets[a.name] < 0:
            return False
        for b in buffers[i + 1 :]:
            live_together = not (a.last < b.first or b.last < a.first)
            apart = (
                offsets[a.name] + _align(a.nbytes) <= offsets[b.name]
                or offsets[b.name] + _align(b.nbytes) <= offsets[a.name]
            )
            if live_together and not apart:
                return False
    return True


def _first_fit(buffers: list[Buffer]) -> tuple[dict[str, int], int]:
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    for b in buffers:
        clashes = sorted(
            (off, off + _align(p.nbytes))
            for p, off in placed
            if not (p.last < b.first or b.last < p.first)
        )
        offset = 0
        for lo, hi in clashes:
            if offset + _align(b.nbytes) <= lo:
                break
            offset = max(offset, hi)
        placed.append((b, offset))
        offsets[b.name] = offset
    arena = max((off + _align(b.nbytes) for b, off in placed), default=0)
    return offsets, arena


def peak_live_bytes(buffers: list[Buffer]) -> int:
    """The largest sum of (aligned) bytes live at one call: a lower bound for any arena."""
    if not buffers:
        return 0
    last = max(b.last for b in buffers)
    return max(
        sum(_align(b.nbytes) for b in buffers if b.first <= i <= b.last) for i in range(last + 1)
    )


@dataclass
class AotModel:
    """Generated C sources and what the report needs."""

    kernels: list[CFunction]
    source: str
    header: str
    arena_bytes: int
    const_bytes: int
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    output_dtype: str
    buffers: list[Buffer] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    """Kernel name of each call, in order (``TVMQ_AFTER_LAYER(i)`` follows call ``i``)."""
    offsets: dict[str, int] = field(default_factory=dict)
    """Arena offset of each buffer (by :attr:`Buffer.name`)."""
    layer_const_bytes: list[int] = field(default_factory=list)
    """Constant bytes (weights, tables) each call brings in first: the flash map by layer."""


def _c_array(name: str, arr: np.ndarray) -> str:
    flat = arr.reshape(-1)
    if arr.dtype == np.float32:
        items = [repr(float(v)) + "f" if np.isfinite(v) else "0.0f" for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    per_line = 8 if arr.dtype == np.float32 else 24
    joined = ",\n  ".join(
        ", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)
    )
    return (
        f"static const {ctype(arr.dtype.name)} {name}[{flat.size}] "
        f"__attribute__((aligned({ALIGN}))) = {{\n  {joined}\n}};\n"
    )


def _numel(ty) -> int:
    return math.prod(int(s) for s in ty.shape)


def _bytes(ty) -> int:
    return _numel(ty) * tvm.DataType(str(ty.dtype)).bits // 8


def _inplace_outputs(fused, calls, resolve, last_use, inp, out_var) -> dict:
    """``{output var: input var}`` for calls whose kernel may write its output over an
    input (PrimFunc attribute :data:`tvmq.kernels.INPLACE_ATTR`: a fused
    residual) where that input dies at the call and has the output's size."""
    out = {}
    funcs = {gv.name_hint: f for gv, f in fused.functions_items()}
    for i, (var, kern, args) in enumerate(calls):
        attrs = getattr(funcs.get(kern.name), "attrs", None)
        idx = None if attrs is None else attrs.get(INPLACE_ATTR)
        if idx is None or var.same_as(out_var) or int(idx) >= len(args):
            continue
        src = args[int(idx)]
        if not isinstance(src, relax.Var):
            continue
        src = resolve(src)
        if src.same_as(inp) or last_use.get(src) != i or _bytes(src.ty) != _bytes(var.ty):
            continue
        out[var] = src
    return out


def generate_aot(fused: tvm.IRModule) -> AotModel:
    """Generate the AOT executor for a fused module with one input and one output."""
    main = fused["main"]
    if len(main.params) != 1:
        raise CodegenError(f"the C executor takes one input, the model has {len(main.params)}")
    kernels = {f.name: f for f in generate_c(fused)}
    bindings = [b for block in main.body.blocks for b in block.bindings]
    out_var = main.body.body
    inp = main.params[0]

    # Resolve trivial var-to-var bindings to their source.
    alias: dict = {}

    def resolve(v):
        while v in alias:
            v = alias[v]
        return v

    calls = []  # (result var, kernel, [arg exprs])
    for b in bindings:
        value = b.value
        if isinstance(value, relax.Var):
            alias[b.var] = value
            continue
        if isinstance(value, relax.Tuple) and len(value.fields) == 1:
            alias[b.var] = value.fields[0]  # torch.export programs return a 1-tuple
            continue
        if not isinstance(value, relax.Call):
            raise CodegenError(f"the C executor only runs call_tir bindings, got {type(value)}")
        if not (isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir"):
            raise CodegenError(f"the C executor only runs call_tir bindings, got {value.op}")
        name = value.args[0].name_hint
        calls.append((b.var, kernels[name], list(value.args[1].fields)))
    out_var = resolve(out_var)

    consts: dict = {}  # id(const) -> (c name, array)
    const_names: dict = {}
    first_def, last_use = {}, {}
    for i, (var, _, args) in enumerate(calls):
        first_def[var] = i
        for a in args:
            if isinstance(a, relax.Var):
                last_use[resolve(a)] = i
    inplace = _inplace_outputs(fused, calls, resolve, last_use, inp, out_var)
    buffers = []
    key = {}  # var -> unique buffer name (Relax names need not be unique)
    owner = {}  # var -> the var whose buffer it lives in (itself, or an in-place input)
    for var, i in first_def.items():
        if var.same_as(out_var):
            continue
        owner[var] = owner.get(inplace.get(var), var)
        key[var] = key[owner[var]] if owner[var] is not var else f"t{i}_{var.name}"
    for var, i in first_def.items():
        if var in owner and owner[var] is var:
            ends = [last_use.get(v, first_def[v]) for v, o in owner.items() if o is var]
            buffers.append(Buffer(key[var], _bytes(var.ty), i, max(ends)))
    for i, (_, kern, _) in enumerate(calls):
        if kern.workspace:
            buffers.append(Buffer(f"__ws{i}", kern.workspace, i, i))
    offsets, arena = plan_memory(buffers)

    lines = []
    body = []
    used_kernels = []
    layer_const_bytes = []
    for i, (var, kern, args) in enumerate(calls):
        if kern.name not in used_kernels:
            used_kernels.append(kern.name)
        layer_const_bytes.append(0)
        c_args = []
        for a, (_, dtype, _numel_) in zip(args, kern.params[:-1]):
            if isinstance(a, tvm.ir.GenericConst):
                if a not in const_names:
                    cname = f"tvmq_c{len(const_names)}"
                    const_names[a] = cname
                    consts[cname] = a.value.numpy().astype(dtype)
                    layer_const_bytes[i] += consts[cname].nbytes
                c_args.append(const_names[a])
            else:
                src = resolve(a)
                if src.same_as(inp):
                    c_args.append("input")
                else:
                    c_args.append(f"({ctype(dtype)}*)(tvmq_arena + {offsets[key[src]]})")
        out_dtype = kern.params[-1][1]
        if var.same_as(out_var):
            c_args.append("output")
        else:
            c_args.append(f"({ctype(out_dtype)}*)(tvmq_arena + {offsets[key[var]]})")
        if kern.workspace:
            c_args.append(f"tvmq_arena + {offsets[f'__ws{i}']}")
        body.append(f"  {kern.name}({', '.join(c_args)});")
        body.append(f"  TVMQ_AFTER_LAYER({i});")

    in_dtype, out_dtype = str(inp.ty.dtype), str(out_var.ty.dtype)
    lines.append(C_PRELUDE)
    lines.append('#include "tvmq_model.h"\n')
    lines.append(
        "/* Profiling hook after each kernel call (e.g. read a cycle counter). */\n"
        "#ifndef TVMQ_AFTER_LAYER\n#define TVMQ_AFTER_LAYER(i) ((void)0)\n#endif\n"
    )
    for name in used_kernels:
        lines.append("static " + kernels[name].source)
    for cname, arr in consts.items():
        lines.append(_c_array(cname, arr))
    lines.append(
        f"static uint8_t tvmq_arena[TVMQ_ARENA_BYTES > 0 ? TVMQ_ARENA_BYTES : 1] "
        f"__attribute__((aligned({ALIGN})));\n"
    )
    lines.append(
        f"int tvmq_model_run(const {ctype(in_dtype)}* input, {ctype(out_dtype)}* output) {{"
    )
    lines.extend(body)
    lines.append("  return 0;\n}\n")
    in_shape = tuple(int(s) for s in inp.ty.shape)
    out_shape = tuple(int(s) for s in out_var.ty.shape)
    const_bytes = int(sum(a.nbytes for a in consts.values()))
    header = (
        "/* Generated by tvmq. */\n#ifndef TVMQ_MODEL_H\n#define TVMQ_MODEL_H\n"
        "#include <stdint.h>\n"
        f"#define TVMQ_INPUT_SIZE {math.prod(in_shape)}\n"
        f"#define TVMQ_OUTPUT_SIZE {math.prod(out_shape)}\n"
        f"#define TVMQ_ARENA_BYTES {arena}\n"
        f"#define TVMQ_LAYERS {len(calls)}\n"
        "/* Define TVMQ_PROFILE to have tvmq_model_run call tvmq_layer_mark(i) after kernel i. */\n"
        "#ifdef TVMQ_PROFILE\nvoid tvmq_layer_mark(int i);\n"
        "#define TVMQ_AFTER_LAYER(i) tvmq_layer_mark(i)\n#endif\n"
        f"#define TVMQ_CONST_BYTES {const_bytes}\n"
        f"typedef {ctype(in_dtype)} tvmq_input_t;\ntypedef {ctype(out_dtype)} tvmq_output_t;\n"
        f"int tvmq_model_run(const {ctype(in_dtype)}* input, {ctype(out_dtype)}* output);\n"
        "#endif\n"
    )
    return AotModel(
        kernels=[kernels[n] for n in used_kernels],
        source="\n".join(lines),
        header=header,
        arena_bytes=arena,
        const_bytes=const_bytes,
        input_shape=in_shape,
        input_dtype=in_dtype,
        output_shape=out_shape,
        output_dtype=out_dtype,
        buffers=buffers,
        layers=[kern.name for _, kern, _ in calls],
        offsets=offsets,
        layer_const_bytes=layer_const_bytes,
    )
