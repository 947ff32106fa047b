"""Policies and inference backends (torch, ONNX Runtime, TensorRT), export and benchmarks."""
