"""A hand-written schedule for the integer LUT kernels on single-core microcontrollers.

TE's default schedule materializes every stage over its whole shape: the int32
accumulator, each epilogue step and the decoded weight become workspace tensors, and the
packed codes are decoded again for every multiply-accumulate. For an MCU this costs both
RAM and instructions. :func:`schedule_mcu` rewrites every kernel that carries the
annotations of :mod:`tvmq.kernels.integer` (block ``*_acc``) as

    for ob in blocks of 4 (or 2) output channels:  # depthwise: one channel at a time
        w[:, :] = decode(codes of block ob)  # lut_decode_int: once, channel-major scratch
        wsum = sum(w)                        # lut_wsum (when the input zero point != 0)
        [pad the channel's input]            # depthwise only
        for each output pixel:
            acc[:] = 0                       # one sum per channel of the block
            for reduction (contiguous innermost; channels-last: kernel column x input
                           channels fused): acc[o] += x * w[o]   # -> tvmq_dot4_s8 in C
            for o in block: y = epilogue(acc[o] - z * wsum[o])   # requantize, bias, ReLU
            [pool_sum += y]                  # a fused average pool, then once per block

Depthwise windows of up to :data:`UNROLL_DEPTHWISE` taps are unrolled. The C printer
turns the block's dot products into one call (``tvmq.backend.c_codegen``).

Every transform is a TVM schedule primitive, so the result is checked by TVM's own
dependence analysis, and the C printer needs nothing special. A primitive that does not
apply (an unusual fused epilogue, say) is skipped: the kernel stays correct, only slower.
"""

from __future__ import annotations

import logging
import math

import tvm
from tvm import tirx
from tvm.s_tir import Schedule, ScheduleError, TensorIntrin
from tvm.script import tirx as T

from ..kernels.integer import VNNI_INPUTS

ANNOTATION = "tvmq.channel_axis"
_log = logging.getLogger(__name__)


def _annotated_acc(sch: Schedule):
    root = sch.get_sblock("root")
    for blk in sch.get_child_blocks(root):
        if ANNOTATION in sch.get(blk).annotations:
            yield blk


def _try(fn, *args, **kwargs) -> bool:
    try:
        fn(*args, **kwargs)
        return True
    except ScheduleError as err:  # the kernel stays correct, only slower
        _log.debug("%s skipped: %s", fn.__name__, str(err).splitlines()[-1])
        return False


def _schedule_acc(sch: Schedule, acc, isa: str = "mcu") -> None:
    block = sch.get(acc)
    ann = block.annotations
    c_pos = int(ann[ANNOTATION])
    order = [int(i) for i in ann["tvmq.reduce_order"]]
    depthwise = bool(int(ann["tvmq.depthwise"]))
    if isa != "mcu" and depthwise and _depthwise_for_vectors(sch, acc, c_pos, isa):
        return
    if (
        isa in ("avx2", "avxvnni", "avx512vnni")
        and not depthwise
        and _conv_for_avx2(sch, acc, c_pos, order, isa)
    ):
        return
    loops = sch.get_loops(acc)
    n_sp = sum(1 for iv in block.iter_vars if int(iv.iter_type) == 0)
    spatial, reduce = list(loops[:n_sp]), list(loops[n_sp:])
    chan = spatial[c_pos]
    others = [lp for i, lp in enumerate(spatial) if i != c_pos]
    block_o = 1 if depthwise else _channel_block(int(sch.get(chan).extent))
    if block_o > 1:  # a block of output channels per input pixel (see CHANNEL_BLOCK)
        chan, o_in = sch.split(chan, factors=[None, block_o])
        sch.reorder(chan, *others, o_in, *[reduce[i] for i in order])
        inner = o_in
    else:
        sch.reorder(chan, *others, *[reduce[i] for i in order])
        inner = others[-1] if others else chan
    if not depthwise and len(reduce) >= 2 and order[-1] == 0 and order[-2] == len(reduce) - 1:
        # channels-last: the last kernel column and the input channels are one contiguous
        # run of the input row (and of the weights), so one dot product covers both
        _try(sch.fuse, reduce[order[-2]], reduce[0])

    # Producers of the accumulator: the decoded weight per channel, the padded input per
    # channel when the conv is depthwise; the zero-point weight sums beside them.
    for prod in sch.get_producers(acc):
        name = sch.get(prod).name_hint
        if name == "lut_decode_int" and block_o > 1:
            _channel_major(sch, prod)
        if name == "lut_decode_int" or (depthwise and name.startswith("pad")):
            _try(sch.compute_at, prod, chan, preserve_unit_loops=True)
        if name == "lut_decode_int":
            _unroll_codes_of_a_byte(sch, prod)
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint == "lut_wsum":
            _try(sch.compute_at, blk, chan, preserve_unit_loops=True)

    # Epilogue blocks (everything after the accumulator) move under the pixel loop. A
    # reduction over the pixels there (a fused average pool) accumulates pixel by pixel;
    # what follows it runs once per channel block, after the pixel loops.
    consumers = [(blk, inner) for blk in sch.get_consumers(acc)]
    while consumers:
        blk, at = consumers.pop(0)
        if _try(sch.reverse_compute_at, blk, at, preserve_unit_loops=True):
            reduces = any(int(iv.iter_type) != 0 for iv in sch.get(blk).iter_vars)
            consumers += [(c, chan if reduces else at) for c in sch.get_consumers(blk)]
    if reduce:
        _try(sch.decompose_reduction, acc, sch.get_loops(acc)[n_sp])
    if depthwise and math.prod(int(sch.get(r).extent) for r in reduce) <= UNROLL_DEPTHWISE:
        for r in reduce:  # a 3x3 window: straight-line multiply-accumulates
            sch.unroll(r)


def _depthwise_for_vectors(sch: Schedule, acc, c_pos: int, isa: str = "cpu") -> bool:
    """A depthwise conv for a CPU with vector units: pixels outer, the (channels-last)
    channel loop innermost, so LLVM vectorizes it across channels (with uint8 inputs, one
    :data:`VNNI_DEPTHWISE` per 8 channels and tap, :data:`VNNI512_DEPTHWISE` per 16 on
    AVX-512 VNNI); padded input and
    decoded weights computed once, the window unrolled, the epilogue per pixel. (The MCU
    schedule walks one channel at a time: right for a scalar core, 1.9x slower here on the
    KWS depthwise layers.) False, nothing changed, unless channels are the last axis."""
    loops = sch.get_loops(acc)
    n_sp = sum(1 for iv in sch.get(acc).iter_vars if int(iv.iter_type) == 0)
    if c_pos != n_sp - 1:
        return False
    spatial, reduce = list(loops[:n_sp]), list(loops[n_sp:])
    sch.reorder(*spatial[:-1], *reduce, spatial[-1])
    lanes = _lanes(isa, int(sch.get(spatial[-1]).extent))
    vnni = _reads_uint8(sch, acc) and int(sch.get(spatial[-1]).extent) % 8 == 0
    for prod in sch.get_producers(acc):  # decoded weights channel-innermost, like the input
        if sch.get(prod).name_hint == "lut_decode_int":
            _try(sch.transform_layout, prod, ("write", 0), _channel_last(sch, prod))
            if vnni:  # one weight per int32 lane: vpdpbusd multiplies it by one input byte
                sch.unsafe_set_dtype(prod, 0, "int32")
        _vectorize_offset(sch, prod)
    for blk in sch.get_consumers(acc):
        _try(sch.reverse_compute_at, blk, spatial[-2], preserve_unit_loops=True)
    if reduce:
        init = sch.decompose_reduction(acc, reduce[0])
        _try(sch.vectorize, sch.get_loops(init)[-1])
    for r in reduce:
        if int(sch.get(r).extent) > 1:
            sch.unroll(r)
    for blk in sch.get_consumers(acc):
        _try(sch.vectorize, sch.get_loops(blk)[-1])
    if vnni:
        intrin = VNNI512_DEPTHWISE if lanes == 16 else VNNI_DEPTHWISE
        sch.tensorize(sch.split(sch.get_loops(acc)[-1], factors=[None, lanes])[1], intrin)
    return True


AVX2_DOT = "tvmq_dot_8x2_i8_avx2"
"""TensorIntrin: 8 output channels += 2 int8 inputs x their 8 x 2 weights (int8 values held
in int16) into int32, one AVX2 ``vpmaddwd`` of the weights and the broadcast input pair."""
AVX2_DOT_COLS = "tvmq_dot_8x2_i8_avx2_cols"
""":data:`AVX2_DOT` for an input pair along a (kernel-column) axis of a one-channel input:
the pair is read as a ``(2, 1)`` region."""


# LLVM 21 retyped the VNNI intrinsics' byte operands from <8 x i32> to <32 x i8>
_VNNI_OPERAND = "int8x32" if tvm.target.codegen.llvm_version_major() >= 21 else "int32x8"


def _vnni_types(n: int) -> tuple[str, str, str]:
    """``(accumulator dtype, operand dtype, LLVM intrinsic)`` of a ``vpdpbusd`` on ``n``
    int32 lanes (8: ymm, 16: zmm); the operand type is the one this LLVM's intrinsic
    declares (:data:`_VNNI_OPERAND`)."""
    acc_t = f"int32x{n}"
    operand_t = f"int8x{4 * n}" if _VNNI_OPERAND == "int8x32" else acc_t
    return acc_t, operand_t, "llvm.x86.avx512.vpdpbusd." + ("256" if n == 8 else "512")


def _dot_nxk(k: int, cols: bool, n: int = 8):
    """(description, implementation) of ``n`` output channels += ``k`` inputs x their n x k
    weights: ``k = 2`` is :data:`AVX2_DOT` (``n = 8`` only; int8 inputs, weights int8 held
    in int16, one ``vpmaddwd``), ``k = 4`` :data:`VNNI_DOT` (uint8 inputs, int8 weights,
    one ``vpdpbusd``; ``n = 16``: the AVX-512 one, :data:`VNNI512_DOT`); ``cols``: the
    inputs a ``(k, 1)`` region (kernel columns of a one-channel input). The ``if``
    branches are chosen when TVMScript parses the functions."""
    a_shape = (k, 1) if cols else (k,)
    a_dtype, b_dtype = ("int8", "int16") if k == 2 else ("uint8", "int8")
    acc_t, operand_t, vnni = _vnni_types(n)
    bytes_t = f"int8x{4 * n}"

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer(a_shape, a_dtype, offset_factor=1),
             b: T.Buffer((n, k), b_dtype, offset_factor=1),
             c: T.Buffer((n,), "int32", offset_factor=1)) -> None:  # fmt: skip
        with T.sblock("root"):
            if cols:
                T.reads(c[0:n], a[0:k, 0:1], b[0:n, 0:k])
            else:
                T.reads(c[0:n], a[0:k], b[0:n, 0:k])
            T.writes(c[0:n])
            for i, j in T.grid(n, k):
                with T.sblock("update"):
                    vi, vj = T.axis.remap("SR", [i, j])
                    # b holds int8 values (k = 2: in int16, sign-extended at decode; the
                    # cast to int8 is the identity for k = 4, and T.cast drops it)
                    if cols:
                        c[vi] = c[vi] + T.cast(a[vj, 0], "int32") * T.cast(
                            T.cast(b[vi, vj], "int8"), "int32"
                        )
                    else:
                        c[vi] = c[vi] + T.cast(a[vj], "int32") * T.cast(
                            T.cast(b[vi, vj], "int8"), "int32"
                        )

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer(a_shape, a_dtype, offset_factor=1),
             b: T.Buffer((n, k), b_dtype, offset_factor=1),
             c: T.Buffer((n,), "int32", offset_factor=1)) -> None:  # fmt: skip
        with T.sblock("root"):
            if cols:
                T.reads(c[0:n], a[0:k, 0:1], b[0:n, 0:k])
            else:
                T.reads(c[0:n], a[0:k], b[0:n, 0:k])
            T.writes(c[0:n])
            if k == 2 and cols:
                pair = T.reinterpret("int32", T.Cast("int16x2", a.vload([0, 0], "int8x2")))
            elif k == 2:
                pair = T.reinterpret("int32", T.Cast("int16x2", a.vload([0], "int8x2")))
            elif cols:
                quad = T.reinterpret("int32", a.vload([0, 0], "uint8x4"))
            else:
                quad = T.reinterpret("int32", a.vload([0], "uint8x4"))
            if k == 2:
                c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], "int32x8") + T.call_llvm_pure_intrin(
                    "int32x8", "llvm.x86.avx2.pmadd.wd",
                    T.reinterpret("int16x16", T.broadcast(pair, 8)), b.vload([0, 0], "int16x16"),
                )  # fmt: skip
            else:
                c[T.ramp(T.int32(0), 1, n)] = T.call_llvm_pure_intrin(
                    acc_t, vnni, c.vload([0], acc_t),
                    T.reinterpret(operand_t, T.broadcast(quad, n)),
                    T.reinterpret(operand_t, b.vload([0, 0], bytes_t)),
                )  # fmt: skip

    return desc, impl


TensorIntrin.register(AVX2_DOT, *_dot_nxk(2, cols=False), override=True)
TensorIntrin.register(AVX2_DOT_COLS, *_dot_nxk(2, cols=True), override=True)

VNNI_DOT = "tvmq_dot_8x4_u8i8_vnni"
"""TensorIntrin: 8 output channels += 4 uint8 inputs x their 8 x 4 int8 weights into int32,
one AVX-VNNI ``vpdpbusd`` (the kernels of :func:`unsigned_inputs_for` read uint8)."""
VNNI_DOT_COLS = "tvmq_dot_8x4_u8i8_vnni_cols"
""":data:`VNNI_DOT` for four neighbouring kernel columns of a one-channel input."""
TensorIntrin.register(VNNI_DOT, *_dot_nxk(4, cols=False), override=True)
TensorIntrin.register(VNNI_DOT_COLS, *_dot_nxk(4, cols=True), override=True)

VNNI512_DOT = "tvmq_dot_16x4_u8i8_vnni512"
""":data:`VNNI_DOT` for 16 output channels, one AVX-512 VNNI ``vpdpbusd`` on zmm."""
VNNI512_DOT_COLS = "tvmq_dot_16x4_u8i8_vnni512_cols"
""":data:`VNNI_DOT_COLS` for 16 output channels."""
TensorIntrin.register(VNNI512_DOT, *_dot_nxk(4, cols=False, n=16), override=True)
TensorIntrin.register(VNNI512_DOT_COLS, *_dot_nxk(4, cols=True, n=16), override=True)

VNNI_DEPTHWISE = "tvmq_mac_8_u8i8_vnni"
"""TensorIntrin: 8 channels += their uint8 input x int8 weight (a depthwise tap), one
``vpdpbusd`` of the zero-extended inputs and the weights held in int32 lanes: it
multiplies and accumulates in one instruction (vpmulld + vpaddd are three)."""


def _mac_n(n: int):
    """(description, implementation) of :data:`VNNI_DEPTHWISE` for ``n`` channels (8: ymm,
    16: AVX-512 zmm, :data:`VNNI512_DEPTHWISE`)."""
    acc_t, operand_t, vnni = _vnni_types(n)

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((n,), "uint8", offset_factor=1),
             b: T.Buffer((n,), "int32", offset_factor=1),
             c: T.Buffer((n,), "int32", offset_factor=1)) -> None:  # fmt: skip
        with T.sblock("root"):
            T.reads(c[0:n], a[0:n], b[0:n])
            T.writes(c[0:n])
            for i in range(n):
                with T.sblock("update"):
                    vi = T.axis.spatial(n, i)
                    # b holds int8 values in int32 (the weights, sign-extended at decode)
                    c[vi] = c[vi] + T.cast(a[vi], "int32") * T.cast(T.cast(b[vi], "int8"), "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((n,), "uint8", offset_factor=1),
             b: T.Buffer((n,), "int32", offset_factor=1),
             c: T.Buffer((n,), "int32", offset_factor=1)) -> None:  # fmt: skip
        with T.sblock("root"):
            T.reads(c[0:n], a[0:n], b[0:n])
            T.writes(c[0:n])
            # lane = (x, 0, 0, 0) . (w, sign, sign, sign) = x * w
            c[T.ramp(T.int32(0), 1, n)] = T.call_llvm_pure_intrin(
                acc_t, vnni, c.vload([0], acc_t),
                T.reinterpret(operand_t, T.Cast(acc_t, a.vload([0], f"uint8x{n}"))),
                T.reinterpret(operand_t, b.vload([0], acc_t)),
            )  # fmt: skip

    return desc, impl


TensorIntrin.register(VNNI_DEPTHWISE, *_mac_n(8), override=True)
VNNI512_DEPTHWISE = "tvmq_mac_16_u8i8_vnni512"
""":data:`VNNI_DEPTHWISE` for 16 channels, one AVX-512 VNNI ``vpdpbusd`` on zmm."""
TensorIntrin.register(VNNI512_DEPTHWISE, *_mac_n(16), override=True)


def _reads_as(sch: Schedule, block, buffer_name: str) -> list | None:
    """The index expressions ``block`` reads buffer ``buffer_name`` at (one point each)."""
    for region in sch.get(block).reads:
        if region.source.name == buffer_name:
            if any(not isinstance(r.extent, tirx.IntImm) or int(r.extent) != 1
                   for r in region.region):  # fmt: skip
                return None
            return [r.min for r in region.region]
    return None


def _conv_for_avx2(sch: Schedule, acc, c_pos: int, order: list[int], isa: str = "avx2") -> bool:
    """A regular channels-last conv for an x86 core with AVX2: per output pixel, every
    output channel accumulates in registers, 8 channels x 2 input channels per
    ``vpmaddwd`` (:data:`AVX2_DOT`); the decoded weights are stored ``(kh, kw, c/2, o,
    c%2)`` so each such block is 16 consecutive int16 (sign-extended once, when decoded:
    a ``vpmovsxbw`` per use saturated port 5). The KWS pointwise convs: 36.3 -> 13.5 us
    (the MCU schedule's per-channel dot products leave one horizontal sum per output;
    blocking 2-5 pixels per weight load measured slower: each pixel's input pair costs
    three port-5 shuffles to broadcast). With one input channel (a first layer) the pairs
    are neighbouring kernel columns instead. A kernel with uint8 inputs (legalized with
    ``unsigned_inputs``, for AVX-VNNI) takes 4 inputs per ``vpdpbusd`` instead
    (:data:`VNNI_DOT`), its weights int8 in ``(kh, kw, c/4, o, c%4)``. False, nothing
    changed, unless the kernel has that shape (weights read at one point per (o, kh, kw,
    c), any axis order; input channels a multiple of 2 (4), or one channel and a kernel
    width that is; output channels a multiple of 8).
    """
    block = sch.get(acc)
    loops = sch.get_loops(acc)
    n_sp = sum(1 for iv in block.iter_vars if int(iv.iter_type) == 0)
    spatial, reduce = list(loops[:n_sp]), list(loops[n_sp:])
    if n_sp != 4 or c_pos != 3 or len(reduce) != 3 or order[-1] != 0:
        return False
    decode = next((p for p in sch.get_producers(acc)
                   if sch.get(p).name_hint == "lut_decode_int"), None)  # fmt: skip
    if decode is None:
        return False
    v = [iv.var for iv in block.iter_vars]
    reads = _reads_as(sch, acc, sch.get(decode).writes[0].source.name)
    # where the decoded weight's axes are: output channel, kernel row, column, input channel
    want = [v[3], v[n_sp + order[0]], v[n_sp + order[1]], v[n_sp + 0]]
    if reads is None or len(reads) != 4:
        return False
    pos = [next((i for i, r in enumerate(reads) if r.same_as(w)), None) for w in want]
    if None in pos or sorted(pos) != [0, 1, 2, 3]:
        return False
    po, ph, pw, pc = pos
    rc, rh, rw = reduce[0], reduce[order[0]], reduce[order[1]]
    if int(sch.get(spatial[3]).extent) % 8:
        return False
    vnni = _reads_uint8(sch, acc)  # an unsigned_inputs kernel: vpdpbusd, 4 inputs a time
    step = VNNI_INPUTS if vnni else 2
    lanes = _lanes(isa, int(sch.get(spatial[3]).extent)) if vnni else 8
    if int(sch.get(rc).extent) % step == 0:  # pairs (quads) of input channels
        sch.transform_layout(decode, ("write", 0), lambda *i: (
            i[ph], i[pw], i[pc] // step, i[po], i[pc] % step))  # fmt: skip
        rc2, rj = sch.split(rc, factors=[None, step])
        sch.reorder(*spatial[:3], rh, rw, rc2, *_split_o(sch, spatial[3], lanes), rj)
        intrin = (VNNI512_DOT if lanes == 16 else VNNI_DOT) if vnni else AVX2_DOT
    elif int(sch.get(rc).extent) == 1 and int(sch.get(rw).extent) % step == 0:
        # one input channel (a first layer): neighbouring kernel columns
        sch.transform_layout(decode, ("write", 0), lambda *i: (
            i[ph], i[pw] // step, i[pc], i[po], i[pw] % step))  # fmt: skip
        rw2, rj = sch.split(rw, factors=[None, step])
        sch.reorder(*spatial[:3], rh, rw2, rc, *_split_o(sch, spatial[3], lanes), rj)
        intrin = (VNNI512_DOT_COLS if lanes == 16 else VNNI_DOT_COLS) if vnni else AVX2_DOT_COLS
    else:
        return False
    if not vnni:
        # the decoded weights sign-extended once, at decode time: the dot product then
        # loads them as they are (vpmovsxbw per use was the port-5 bottleneck)
        sch.unsafe_set_dtype(decode, 0, "int16")
    for blk in sch.get_producers(acc):  # the int8 -> uint8 offset, vectorized
        _vectorize_offset(sch, blk)
    if intrin in (VNNI_DOT, VNNI512_DOT, AVX2_DOT):
        # one byte load per codes of a byte, shifts constant: 8.0 -> 5.5 us per KWS
        # pointwise conv (LLVM's own vectorization of the decode gathered byte by byte;
        # on the one-channel first layer it is the faster one, 3.5 vs 4.6 us)
        _unroll_codes_of_a_byte(sch, decode)
    oi = sch.get_loops(acc)[-2]
    init = sch.decompose_reduction(acc, rh)
    _try(sch.vectorize, sch.get_loops(init)[-1])
    consumers = list(sch.get_consumers(acc))
    while consumers:  # the epilogue per pixel (a fused pool sums pixel by pixel)
        blk = consumers.pop(0)
        if not _try(sch.reverse_compute_at, blk, spatial[2], preserve_unit_loops=True):
            continue
        if all(int(iv.iter_type) == 0 for iv in sch.get(blk).iter_vars):
            _try(sch.vectorize, sch.get_loops(blk)[-1])
            consumers += list(sch.get_consumers(blk))
    sch.tensorize(oi, intrin)
    return True


def _reads_uint8(sch: Schedule, block) -> bool:
    """Whether ``block`` reads a uint8 buffer (the input of an ``unsigned_inputs`` kernel)."""
    return any(r.source.dtype == "uint8" for r in sch.get(block).reads)


def _vectorize_offset(sch: Schedule, block) -> None:
    """The ``lut_to_uint8`` stage (``block`` or its producer) as one vectorized loop; under
    a pad, inlined into it, the pad vectorized along its innermost (channel) axis."""
    name = sch.get(block).name_hint
    if name == "lut_to_uint8":
        _try(lambda: sch.vectorize(sch.split(sch.fuse(*sch.get_loops(block)), [None, 32])[1]))
    elif name.startswith("pad"):
        for blk in sch.get_producers(block):
            if sch.get(blk).name_hint == "lut_to_uint8":
                _try(sch.compute_inline, blk)
                _try(sch.vectorize, sch.get_loops(block)[-1])


def _split_o(sch: Schedule, loop, lanes: int = 8):
    """Output channels in blocks of ``lanes``: the (outer, inner) loops."""
    return sch.split(loop, factors=[None, lanes])


def _lanes(isa: str, channels: int) -> int:
    """int32 lanes per vector for ``channels`` channels: 16 (a zmm register) on AVX-512
    VNNI when they divide the channels, else 8 (ymm)."""
    return 16 if isa == "avx512vnni" and channels % 16 == 0 else 8


def _channel_last(sch: Schedule, decode):
    """The index map that moves a decoded weight's output-channel axis last."""
    o = int(sch.get(decode).annotations.get("tvmq.out_axis", 0))

    def index_map(*idx):
        return (*idx[:o], *idx[o + 1 :], idx[o])

    return index_map


UNROLL_DEPTHWISE = 25
"""Depthwise windows of at most this many taps are unrolled (no dot-product loop of 3)."""

CHANNEL_BLOCK = (4, 2)
"""Output channels computed per input pixel (the first that divides the channel count):
their weights are decoded together and the inner loops become one multi-channel dot
product in C (``tvmq_dot4_s8``), which loads and sign-extends each input word once."""


def _channel_block(extent: int) -> int:
    return next((b for b in CHANNEL_BLOCK if extent % b == 0 and extent > b), 1)


def _channel_major(sch: Schedule, decode) -> None:
    """Store the decoded weight output-channel-major, so each channel of a block is one
    contiguous run in the scratch (what the multi-channel dot product reads)."""
    o = int(sch.get(decode).annotations.get("tvmq.out_axis", 0))
    if o == 0:
        return

    def index_map(*idx):
        return (idx[o], *idx[:o], *idx[o + 1 :])

    _try(sch.transform_layout, decode, ("write", 0), index_map)


def _unroll_codes_of_a_byte(sch: Schedule, decode) -> None:
    """Split the decode's innermost loop by the codes per byte and unroll: each packed
    byte is loaded once and the shifts become constants (when the codes of one channel
    start on a byte boundary, which the simplifier proves from the shapes)."""
    per = int(sch.get(decode).annotations.get("tvmq.codes_per_byte", 1))
    if per <= 1:
        return
    loops = [lp for lp in sch.get_loops(decode) if int(sch.get(lp).extent) > 1]
    if not loops or int(sch.get(loops[-1]).extent) % per:
        return
    _, inner = sch.split(loops[-1], factors=[None, per])
    sch.unroll(inner)


ISAS = ("mcu", "cpu", "avx2", "avxvnni", "avx512vnni")
"""What a schedule is for: a microcontroller (scalar core, the C printer's dot products),
a host CPU with vector units, an x86 host with AVX2, one with AVX2 and AVX-VNNI, or one
with AVX-512 VNNI (16 int32 lanes per ``vpdpbusd``) (:func:`schedule_isa`)."""


def unsigned_inputs_for(isa: str) -> bool:
    """Whether the regular convs for ``isa`` take uint8 inputs (the legalizer's
    ``unsigned_inputs``): on AVX-VNNI, whose ``vpdpbusd`` multiplies uint8 by int8."""
    return isa in ("avxvnni", "avx512vnni")


def schedule_primfunc(func: tirx.PrimFunc, isa: str = "mcu") -> tirx.PrimFunc:
    """tvmq's schedule of one PrimFunc for ``isa`` (:data:`ISAS`); unchanged when it has
    no annotated kernel or was already scheduled, e.g. by MetaSchedule from a tuning
    database."""
    if func.attrs is not None and int(func.attrs.get("tirx.is_scheduled", 0)):
        return func
    sch = schedule_of(tvm.IRModule({"main": func}), isa)
    return func if sch is None else sch.mod["main"]


def schedule_of(mod: tvm.IRModule, isa: str = "mcu") -> Schedule | None:
    """tvmq's schedule of a one-function module (a tuning task's workload) as a
    :class:`Schedule` whose trace can seed a tuning database, or None when the function
    has no annotated LUT kernel."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
    sch = Schedule(mod)
    try:
        blocks = list(_annotated_acc(sch))
    except ScheduleError:
        return None
    if not blocks:
        return None
    for acc in blocks:
        _schedule_acc(sch, acc, isa)
    return sch


def schedule_mcu(mod: tvm.IRModule, isa: str = "mcu") -> tvm.IRModule:
    """Apply :func:`schedule_primfunc` to every PrimFunc of ``mod`` (other functions kept)."""
    out = {}
    for gv, f in mod.functions_items():
        out[gv] = schedule_primfunc(f, isa) if isinstance(f, tirx.PrimFunc) else f
    new = tvm.IRModule(out, attrs=mod.attrs)
    return new


def schedule_host(mod: tvm.IRModule, target=None) -> tvm.IRModule:
    """The schedule for a host build for ``target`` (default: this CPU): the MCU one,
    except depthwise convs, which vectorize across channels (:func:`_depthwise_for_vectors`),
    and on AVX2 / AVX-VNNI the regular convs (:func:`_conv_for_avx2`)."""
    if target is None:
        from ..targets import lut_host_llvm

        target = lut_host_llvm()
    return schedule_mcu(mod, schedule_isa(target))


def is_mcu_target(target) -> bool:
    """Whether ``target`` is a microcontroller (an Arm Thumb triple: the MCU schedule)
    rather than a host CPU (:func:`schedule_host`)."""
    triple = str(target.attrs.get("mtriple", "")) if target is not None else ""
    return triple.startswith(("thumb", "arm"))


def schedule_isa(target) -> str:
    """The :data:`ISAS` entry for ``target``: ``"mcu"`` for a microcontroller,
    ``"avx512vnni"`` / ``"avxvnni"`` / ``"avx2"`` for an LLVM target whose CPU has AVX-512
    VNNI (with BW and VL) / AVX-VNNI / AVX2, else ``"cpu"``."""
    if target is None or is_mcu_target(target):
        return "mcu"
    if target.kind.name == "llvm":
        from tvm.target.codegen import llvm_cpu_has_features

        try:
            from ..targets import AVX512_VNNI

            if llvm_cpu_has_features(list(AVX512_VNNI), target):
                return "avx512vnni"
            if llvm_cpu_has_features(["avx2"], target):
                return "avxvnni" if llvm_cpu_has_features(["avxvnni"], target) else "avx2"
        except tvm.TVMError:  # not an x86 LLVM target: no AVX2 schedule
            pass
    return "cpu"
