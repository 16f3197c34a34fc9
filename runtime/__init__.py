"""Running exported models: ONNX Runtime reference, TensorRT engines, generation."""
