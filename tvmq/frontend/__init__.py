"""Model importers: read float models (TFLite today; ONNX and torch.export through TVM's
Relax frontends as the graph-pass work lands) into what tvmq quantizes."""

from .tflite_weights import LayerWeight, read_tflite_weights

__all__ = ["LayerWeight", "read_tflite_weights"]
