"""``load_model``: a float model file (or program) to a Relax IRModule, via TVM's frontends.

Weights come out as ``relax.Constant`` s inside ``main``, which is what
:class:`relay_passes.AnnotateQuant` looks for. The imported module is constant-folded, so
weights an int8 model stores as ``dequantize(int8 constant)`` become float constants too
(folding is safe here, before annotation; after it, it would undo the quantization).

TFLite files with dynamic-range-quantized weights (int8 weights with scales under float
ops, as in MLPerf Tiny's "float32" KWS model) are refused by TVM's TFLite frontend ("likely
to have dynamic range quantization"). tvmq imports them by handing the frontend a converter
that presents those weight tensors as float32, dequantized per channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, TvmqError

_FLOAT32 = 0


class ModelImportError(TvmqError):
    """A model could not be imported (unsupported op, corrupt file, unknown format)."""


class _FloatView:
    """A TFLite tensor accessor that reports FLOAT32 and no quantization."""

    def __init__(self, tensor):
        self._tensor = tensor

    def Type(self):
        return _FLOAT32

    def Quantization(self):
        return None

    def __getattr__(self, name):
        return getattr(self._tensor, name)


def _dynamic_range_weights(model, subgraph) -> set[int]:
    """Indices of int8 weight tensors feeding float ops (dynamic-range quantization)."""
    out = set()
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        outs = [op.Outputs(j) for j in range(op.OutputsLength())]

        def quantized(idx: int) -> bool:
            if idx < 0:
                return False
            q = subgraph.Tensors(idx).Quantization()
            return q is not None and q.ScaleLength() > 0

        if ins and not quantized(ins[0]) and not any(quantized(o) for o in outs):
            out.update(idx for idx in ins[1:] if quantized(idx))
    return out


def _converter_class():
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    from .tflite_weights import _tensor_array

    class DequantizingConverter(OperatorConverter):
        """OperatorConverter that dequantizes dynamic-range int8 weights to float32."""

        _dyn: set[int] | None = None

        def _dynamic(self) -> set[int]:
            if self._dyn is None:
                self._dyn = _dynamic_range_weights(self.model, self.subgraph)
            return self._dyn

        def get_tensors(self, tensors_idx_list):
            wrappers = super().get_tensors(tensors_idx_list)
            for w in wrappers:
                if w.tensor_idx in self._dynamic():
                    w.tensor = _FloatView(w.tensor)
                    w.qnn_params = None
            return wrappers

        def get_tensor_value(self, tensor_wrapper, is_sparse=False):
            if tensor_wrapper.tensor_idx in self._dynamic():
                return _tensor_array(self.model, self.subgraph, tensor_wrapper.tensor_idx)[0]
            return super().get_tensor_value(tensor_wrapper, is_sparse)

    return DequantizingConverter


def _load_tflite(path: Path, input_shapes):
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FormatError(f"{path} is not a TFLite model (no TFL3 identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    return from_tflite(model, shape_dict=input_shapes, op_converter=_converter_class())


def _load_onnx(model_or_path, input_shapes):
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        try:
            model = onnx.load(str(model_or_path))
            onnx.checker.check_model(model)
        except Exception as exc:
            raise FormatError(f"{model_or_path} is not a valid ONNX model: {exc}") from exc
    return from_onnx(model, shape_dict=input_shapes, keep_params_in_input=False)


def load_model(model: Any, input_shapes: dict[str, tuple[int, ...]] | None = None):
    """Import a float model into a Relax ``IRModule`` with its weights as constants.

    Parameters
    ----------
    model : str, Path, onnx.ModelProto or torch.export.ExportedProgram
        A ``.onnx`` or ``.tflite`` file, an in-memory ONNX model, or a ``torch.export``
        program (needs the ``train`` extra).
    input_shapes : dict, optional
        Input name -> shape, for models with dynamic input dimensions.

    Returns
    -------
    tvm.IRModule
        ``main`` takes the model inputs; weights are ``relax.Constant`` s.

    Raises
    ------
    FormatError
        The file is missing, corrupt, or of an unknown kind.
    ModelImportError
        TVM's frontend cannot convert the model (the message names the operator).
    """
    kind = _kind(model)
    try:
        if kind == "onnx":
            mod = _load_onnx(model, input_shapes)
        elif kind == "tflite":
            mod = _load_tflite(Path(model), input_shapes)
        else:
            from tvm.relax.frontend.torch import from_exported_program

            mod = from_exported_program(model, keep_params_as_input=False)
    except TvmqError:
        raise
    except OSError as exc:
        raise FormatError(f"cannot read {model}: {exc.strerror or exc}") from exc
    except Exception as exc:  # frontends raise OpNotImplemented, TVMError, AssertionError...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"TVM could not import {_name(model)}: {msg}") from exc
    from tvm import relax

    return relax.transform.FoldConstant()(_drop_param_copies(mod))


def _drop_param_copies(mod):
    """Remove the TFLite frontend's ``params`` attribute: it holds a second copy of every
    weight, which would keep the float weights in the module after quantization."""
    main = mod["main"]
    if main.attrs is not None and "params" in main.attrs:
        mod = mod.copy() if hasattr(mod, "copy") else mod
        mod["main"] = main.without_attr("params")
    return mod


def _name(model: Any) -> str:
    return str(model) if isinstance(model, str | Path) else type(model).__name__


def _kind(model: Any) -> str:
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise FormatError(f"model file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return "onnx"
        if suffix == ".tflite":
            return "tflite"
        head = path.read_bytes()[:8]
        if head[4:8] == b"TFL3":
            return "tflite"
        raise FormatError(f"{path}: unknown model format (expected .onnx or .tflite)")
    mod_name = type(model).__module__
    if mod_name.startswith("onnx"):
        return "onnx"
    if mod_name.startswith("torch"):
        return "torch"
    raise FormatError(f"cannot import a {type(model).__name__}; pass a .onnx/.tflite path")


def constant_weights(mod) -> dict[str, np.ndarray]:
    """All float constants of ``main`` with at least 2 dims, by first-use order (for tests)."""
    from tvm import relax

    found: dict[str, np.ndarray] = {}

    @relax.expr_functor.visitor
    class _Collect(relax.PyExprVisitor):
        def visit_constant_(self, op):
            arr = op.data.numpy()
            if arr.ndim >= 2 and arr.dtype == np.float32:
                found[f"const{len(found)}"] = arr

    _Collect().visit_expr(mod["main"])
    return found


def convert_layout(mod, layout: str = "NHWC"):
    """The module with every 2-D convolution in ``layout`` (``"NHWC"``: kernels ``OHWI``),
    transposes inserted where the graph needs the old layout, weights folded.

    Channels-last is what MCU kernels want: the reduction over input channels becomes
    contiguous in both activation and weight, so the integer kernels' inner loop is one
    dot product (SMLAD on Cortex-M4/M7/M55). Apply before quantizing (to a float module).
    """
    from tvm import relax

    layouts = {"NHWC": ["NHWC", "OHWI"], "NCHW": ["NCHW", "OIHW"]}
    if layout not in layouts:
        raise FormatError(f"layout must be one of {sorted(layouts)}, got {layout!r}")
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": layouts[layout]})(mod)
    return relax.transform.FoldConstant()(mod)
