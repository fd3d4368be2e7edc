"""The C AOT executor: memory planning, agreement with TVM, determinism, golden source."""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_integer_path import calib_batches
from test_quantize_e2e import onnx_model

import tvmq
from tvmq.backend.aot import Buffer, generate_aot, peak_live_bytes, plan_memory
from tvmq.backend.host import HostModel
from tvmq.config import fixed_point

GOLDEN = Path(__file__).parent / "golden"


fixed = fixed_point


buffers = st.lists(
    st.tuples(st.integers(1, 5000), st.integers(0, 12), st.integers(0, 4)), min_size=1, max_size=25
).map(lambda xs: [Buffer(f"b{i}", n, f, f + d) for i, (n, f, d) in enumerate(xs)])


@settings(max_examples=200, deadline=None)
@given(buffers)
def test_plan_never_overlaps_live_buffers(bufs):
    offsets, arena = plan_memory(bufs)
    for a in bufs:
        assert offsets[a.name] % 16 == 0 and offsets[a.name] + a.nbytes <= arena
        for b in bufs:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            assert (
                offsets[a.name] + a.nbytes <= offsets[b.name]
                or offsets[b.name] + b.nbytes <= offsets[a.name]
            )
    assert arena >= peak_live_bytes(bufs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=2, max_size=12))
def test_plain_chain_needs_only_the_largest_pair(sizes):
    # tensor i is written by call i and read by call i + 1
    bufs = [Buffer(f"t{i}", n, i, i + 1) for i, n in enumerate(sizes)]
    _, arena = plan_memory(bufs)
    pair = max(-(-a // 16) * 16 + -(-b // 16) * 16 for a, b in itertools.pairwise(sizes))
    assert arena == max(pair, -(-sizes[-1] // 16) * 16)


CASES = {
    "w4": ("w4-kmeans", None),
    "w4a8": ("w4-kmeans-a8", calib_batches(4)),
    "w4a8-fixed": (fixed("w4-kmeans-a8"), calib_batches(4)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_c_executor_equals_tvm(tmp_path, case):
    cfg, calib = CASES[case]
    qm = tvmq.quantize(onnx_model(), cfg, calib=calib)
    aot = generate_aot(qm.fused())
    host = HostModel(aot, tmp_path)
    for x in np.random.default_rng(3).standard_normal((4, 1, 3, 12, 12)).astype(np.float32):
        np.testing.assert_allclose(host.run(x), qm.build().run(x), rtol=1e-6, atol=1e-6)
    assert aot.arena_bytes <= peak_live_bytes(aot.buffers)  # the planner reaches the bound
    assert aot.const_bytes < 0.3 * 4 * (8 * 27 + 8 * 9 + 10 * 512)  # packed weights


def test_kws_c_executor_equals_tvm(tmp_path, mlperf_model):
    rng = np.random.default_rng(4)
    calib = [rng.uniform(-50, 50, (1, 49, 10, 1)).astype(np.float32) for _ in range(4)]
    qm = tvmq.quantize(mlperf_model("kws_dscnn_float32.tflite"), fixed("w4-kmeans-a8"), calib=calib)
    aot = generate_aot(qm.fused())
    host = HostModel(aot, tmp_path)
    for x in rng.uniform(-50, 50, (3, 1, 49, 10, 1)).astype(np.float32):
        np.testing.assert_allclose(host.run(x), qm.build().run(x), rtol=1e-6, atol=1e-7)
    assert aot.arena_bytes <= peak_live_bytes(aot.buffers)
    print("KWS W4A8 fixed: arena", aot.arena_bytes, "const", aot.const_bytes)


def test_generation_is_deterministic_and_matches_golden():
    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    first = generate_aot(qm.fused()).source
    qm2 = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    assert generate_aot(qm2.fused()).source == first
    golden = GOLDEN / "onnx_w4a8_fixed.c"
    if os.environ.get("TVMQ_UPDATE_GOLDEN"):
        golden.write_text(first)
    assert golden.read_text() == first, (
        "generated C changed; if intended, rerun with TVMQ_UPDATE_GOLDEN=1 and review the diff"
    )
