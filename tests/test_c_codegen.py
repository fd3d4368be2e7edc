"""tvmq's plain-C printer: every fused kernel of real models, gcc-built, equals TVM's LLVM
build of the same TIR (bit for bit on integer outputs)."""

import numpy as np
import pytest
import tvm
from test_integer_path import calib_batches
from test_quantize_e2e import onnx_model
from tvm import relax, tirx

import tvmq
from tvmq.backend import generate_c
from tvmq.backend.host import call, compile_shared
from tvmq.config import fixed_point

fixed = fixed_point


def call_sites(fused):
    """``{kernel name: [constant array or None for an activation, ...]}`` from ``main``."""
    sites = {}

    @relax.expr_functor.visitor
    class Find(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir":
                gv, args = call.args[0], call.args[1]
                sites[gv.name_hint] = [
                    a.value.numpy() if isinstance(a, tvm.ir.GenericConst) else None
                    for a in args.fields
                ]
            super().visit_call_(call)

    Find().visit_expr(fused["main"])
    return sites


def kernel_args(func, consts, rng):
    """Real constants where the model passes constants, random activations elsewhere."""
    arrays = []
    for (_, dtype, numel), const in zip(func.params[:-1], consts):
        if const is not None:
            arrays.append(np.ascontiguousarray(const.reshape(-1).astype(dtype)))
        elif dtype == "int8":
            arrays.append(rng.integers(-128, 128, numel).astype(np.int8))
        else:
            arrays.append((rng.standard_normal(numel) * 3).astype(dtype))
    _, dtype, numel = func.params[-1]
    return arrays, np.zeros(numel, dtype)


def check_module(fused, tmp_path):
    """Run every kernel ``main`` calls through C (gcc) and LLVM on the same inputs."""
    rng = np.random.default_rng(0)
    cfuncs = generate_c(fused)
    lib = compile_shared(cfuncs, tmp_path)
    prims = {gv.name_hint: f for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)}
    llvm = tvm.compile(
        tvm.IRModule({k: v.with_attr("global_symbol", k) for k, v in prims.items()}),
        target=tvm.target.Target({"kind": "llvm", "num-cores": 1}),
    )
    sites = call_sites(fused)
    assert set(sites) == {f.name for f in cfuncs}
    for func in cfuncs:
        inputs, out_c = kernel_args(func, sites[func.name], rng)
        call(lib, func, [*inputs, out_c])
        prim = prims[func.name]
        tensors = [
            tvm.runtime.tensor(a.reshape([int(s) for s in p.shape]))
            for a, p in zip([*inputs, out_c], prim.params)
        ]
        llvm[func.name](*tensors)
        out_llvm = tensors[-1].numpy().reshape(-1)
        if out_c.dtype.kind in "iu":
            np.testing.assert_array_equal(out_c, out_llvm, err_msg=func.name)
        else:
            np.testing.assert_allclose(out_c, out_llvm, rtol=1e-5, atol=1e-5, err_msg=func.name)
    return cfuncs


@pytest.mark.parametrize("preset", ["w4-kmeans", "w4-kmeans-a8", "fixed-w4-kmeans-a8"])
def test_generated_c_equals_llvm_on_onnx_model(tmp_path, preset):
    cfg = fixed("w4-kmeans-a8") if preset.startswith("fixed") else preset
    calib = calib_batches(4) if "a8" in preset else None
    qm = tvmq.quantize(onnx_model(), cfg, calib=calib)
    cfuncs = check_module(qm.fused(), tmp_path)
    assert any("lut_conv" in f.name for f in cfuncs)
    for f in cfuncs:  # plain C: no TVM runtime, raw pointers only
        assert "TVM" not in f.source and "(void* self" not in f.source


def test_generated_c_equals_llvm_on_kws(tmp_path, mlperf_model):
    rng = np.random.default_rng(2)
    calib = [rng.uniform(-50, 50, (1, 49, 10, 1)).astype(np.float32) for _ in range(4)]
    qm = tvmq.quantize(mlperf_model("kws_dscnn_float32.tflite"), fixed("w4-kmeans-a8"), calib=calib)
    cfuncs = check_module(qm.fused(), tmp_path)
    # the 4 depthwise and 4 pointwise layers share kernels (weights are arguments)
    assert sum("lut_conv" in f.name for f in cfuncs) >= 3


def test_unknown_nodes_fail_loudly():
    from tvmq.backend import CodegenError, print_function

    f = tvm.tirx.PrimFunc([], tvm.tirx.Evaluate(tvm.tirx.call_extern("int32", "printf")))
    with pytest.raises(CodegenError, match="call_extern has no plain-C form"):
        print_function("f", f)
