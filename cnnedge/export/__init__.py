"""Keras -> ONNX (FP32, FP16, INT8 Q/DQ) -> TensorRT engines, each checked against Keras."""
