"""Fuzzing model import: truncated, bit-flipped and spliced ONNX and TFLite files give a
TvmqError (FormatError or ModelImportError) or a clean import, never another exception, a
crash or a hang. Whatever imports must then quantize or be refused with a TvmqError."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantize_e2e import onnx_model

import tvmq
from tvmq.errors import TvmqError

CASES = {"onnx": 0, "tflite": 0}
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _mutate(data, blob: bytes) -> bytes:
    blob = bytearray(blob)
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    at = data.draw(st.integers(0, len(blob) - 1))
    if kind == "truncate":
        return bytes(blob[:at])
    if kind == "flip":
        for i in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[i] ^= data.draw(st.integers(1, 255))
        return bytes(blob)
    blob[at : at + 8] = data.draw(st.binary(max_size=16))
    return bytes(blob)


def _import_and_quantize(path) -> None:
    try:
        mod = tvmq.load_model(path)
    except TvmqError:
        return
    try:  # a flipped weight byte may have made a NaN: that must be refused, not quantized
        tvmq.quantize(mod, "w4-kmeans")
    except TvmqError:
        pass


@FUZZ
@given(data=st.data())
def test_fuzz_onnx(tmp_path, data):
    p = tmp_path / "m.onnx"
    p.write_bytes(_mutate(data, onnx_model().SerializeToString()))
    CASES["onnx"] += 1
    _import_and_quantize(p)


@pytest.fixture(scope="module")
def tflite_bytes(mlperf_model):
    return mlperf_model("kws_dscnn_float32.tflite").read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_tflite(tflite_bytes, tmp_path, data):
    p = tmp_path / "m.tflite"
    p.write_bytes(_mutate(data, tflite_bytes))
    CASES["tflite"] += 1
    try:
        tvmq.load_model(p)  # importing is what is fuzzed (quantizing KWS 80x is slow)
    except TvmqError:
        pass


def test_nan_weights_are_refused_by_name():
    import onnx
    from onnx import numpy_helper

    model = onnx_model()
    init = model.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.reshape(-1)[3] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.checker.check_model(model)
    with pytest.raises(TvmqError, match=r"NaN|inf|finite"):
        tvmq.quantize(model, "w4-kmeans")


def test_fuzzers_really_ran(mlperf_model):
    """160 cases in all (80 ONNX, 80 TFLite)."""
    assert CASES["onnx"] >= 80 and CASES["tflite"] >= 80
