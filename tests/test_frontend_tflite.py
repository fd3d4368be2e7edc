import numpy as np
import pytest

import tvmq
from tvmq.frontend import read_tflite_weights


def test_kws_dynamic_range_weights_are_dequantized(mlperf_model):
    """The KWS 'float32' file stores its pointwise convs as int8 + scales."""
    layers = read_tflite_weights(mlperf_model("kws_dscnn_float32.tflite"))
    assert [layer.op for layer in layers].count("DEPTHWISE_CONV_2D") == 4
    assert len(layers) == 10 and sum(x.weight.size for x in layers) == 22016
    int8_layers = [layer for layer in layers if layer.stored_dtype == "int8"]
    assert len(int8_layers) == 5  # the first conv and the four pointwise convs
    for layer in layers:
        assert layer.weight.dtype == np.float32 and np.all(np.isfinite(layer.weight))
    # Dequantized values sit on a per-channel int8 grid: at most 255 distinct values/channel.
    pw = int8_layers[1].weight
    assert pw.shape == (64, 1, 1, 64)
    assert max(np.unique(pw[c]).size for c in range(64)) <= 255
    # The int8 reference model holds the same weights (quantized per channel by TFLite).
    ref = read_tflite_weights(mlperf_model("kws_dscnn_int8.tflite"))
    np.testing.assert_allclose(ref[2].weight, pw, atol=np.abs(pw).max() / 100)


def test_ic_resnet8_is_float(mlperf_model):
    layers = read_tflite_weights(mlperf_model("ic_resnet8_float32.tflite"))
    assert all(layer.stored_dtype == "float32" for layer in layers)
    assert layers[0].weight.shape == (16, 3, 3, 3) and layers[0].layout == "OHWI"
    assert layers[-1].op == "FULLY_CONNECTED" and layers[-1].weight.shape == (10, 64)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x00\x00\x00\x00TFL3" + b"\xff" * 40])
def test_corrupt_files_raise_format_error(tmp_path, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(tvmq.FormatError):
        read_tflite_weights(path)


def test_truncated_real_model_raises_format_error(tmp_path, mlperf_model):
    data = mlperf_model("ic_resnet8_float32.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(tvmq.FormatError):
        read_tflite_weights(path)


def test_missing_file():
    with pytest.raises(tvmq.FormatError, match="cannot read"):
        read_tflite_weights("/nonexistent/model.tflite")
