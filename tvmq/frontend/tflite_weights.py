"""Read the weight tensors of a TFLite model's conv / depthwise-conv / dense layers.

This reads the flatbuffer directly (the ``tflite`` package), without TVM, so the scheme
benchmarks and the demo can quantize real weights. Weights stored as int8 with scales
(TFLite dynamic-range quantization, as in MLPerf Tiny's "float32" KWS model, whose five
pointwise convolutions are int8) are dequantized, ``(q - zero_point) * scale`` per channel
along the tensor's ``quantized_dimension``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError

# TFLite TensorType enum values this reader accepts.
_FLOAT32, _INT8 = 0, 9
# Builtin op -> (layout of its weight, output-channel axis in that layout).
_WEIGHT_OPS = {
    "CONV_2D": ("OHWI", 0),
    "DEPTHWISE_CONV_2D": ("1HWO", 3),
    "FULLY_CONNECTED": ("OI", 0),
}


@dataclass(frozen=True)
class LayerWeight:
    """One layer's weight tensor.

    Attributes
    ----------
    name : str
        TFLite tensor name of the weight.
    op : str
        Builtin operator using it ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED").
    weight : np.ndarray
        float32 values in the TFLite layout ``layout``.
    layout : str
        ``"OHWI"``, ``"1HWO"`` or ``"OI"``.
    channel_axis : int
        Output-channel axis of ``weight`` (the per-channel quantization axis).
    stored_dtype : str
        ``"float32"``, or ``"int8"`` when the file held dynamic-range-quantized weights.
    """

    name: str
    op: str
    weight: np.ndarray
    layout: str
    channel_axis: int
    stored_dtype: str


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _tensor_array(model, subgraph, index: int) -> tuple[np.ndarray, str]:
    t = subgraph.Tensors(index)
    shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    buf = model.Buffers(t.Buffer())
    raw = buf.DataAsNumpy() if buf is not None and buf.DataLength() else None
    if raw is None or isinstance(raw, int):
        raise FormatError(f"weight tensor {t.Name().decode()!r} has no constant data")
    raw = np.asarray(raw, dtype=np.uint8).tobytes()
    if t.Type() == _FLOAT32:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32), "float32"
    if t.Type() == _INT8:
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            raise FormatError(f"int8 weight {t.Name().decode()!r} has no quantization scales")
        values = np.frombuffer(raw, dtype=np.int8).reshape(shape).astype(np.float32)
        bshape = [1] * len(shape)
        if q.ScaleLength() > 1:
            bshape[q.QuantizedDimension()] = q.ScaleLength()
        scale = q.ScaleAsNumpy().astype(np.float32).reshape(bshape)
        zero = 0.0
        if q.ZeroPointLength():
            zero = (
                q.ZeroPointAsNumpy()
                .astype(np.float32)
                .reshape(bshape if q.ZeroPointLength() > 1 else [])
            )
        return (values - zero) * scale, "int8"
    raise FormatError(f"weight {t.Name().decode()!r} has unsupported TFLite type {t.Type()}")


def read_tflite_weights(path: str | Path) -> list[LayerWeight]:
    """Weights of every conv, depthwise-conv and dense layer of a TFLite model, in graph order.

    Parameters
    ----------
    path : str or Path
        A ``.tflite`` file.

    Returns
    -------
    list of LayerWeight

    Raises
    ------
    FormatError
        The file is missing, not a TFLite flatbuffer, or a weight is not constant.
    """
    import tflite

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FormatError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        names = _builtin_names()
        subgraph = model.Subgraphs(0)
        layers = []
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if name not in _WEIGHT_OPS or op.InputsLength() < 2:
                continue
            widx = op.Inputs(1)
            weight, stored = _tensor_array(model, subgraph, widx)
            layout, axis = _WEIGHT_OPS[name]
            layers.append(
                LayerWeight(
                    name=subgraph.Tensors(widx).Name().decode(),
                    op=name,
                    weight=weight,
                    layout=layout,
                    channel_axis=axis,
                    stored_dtype=stored,
                )
            )
    except FormatError:
        raise
    except Exception as exc:  # the flatbuffer accessors raise anything on corrupt input
        raise FormatError(f"{path} is not a readable TFLite model: {exc!r}") from exc
    return layers
