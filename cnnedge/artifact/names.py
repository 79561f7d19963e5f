"""The export folder's file names, spelled once: cnn-export writes them, the runtime swaps and checks them, the
trainer's --force clears them."""
from __future__ import annotations

STEM = "model"
ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
INT8_CPU_NAME, INT8_TRT_NAME = "model.int8.onnx", "model.int8.trt.onnx"  # ONNX Runtime's CPU kernels / TensorRT
ENGINE_NAMES = {"fp32": "model.engine", "fp16": "model.fp16.engine", "int8": "model.int8.engine"}
REPORT_NAME = "export_report.json"
CALIB_PREFIX = "model.int8.calib-"
#: what follows the stem in each artifact name (``.int8.onnx``): the same files exported from another model's stem
SUFFIXES = tuple(dict.fromkeys(n[len(STEM):] for n in (*ONNX_NAMES.values(), INT8_TRT_NAME, *ENGINE_NAMES.values())))
