"""qmamba: group-quantized (Quamba2-style W8A8) Mamba2 from PyTorch to ONNX and TensorRT.

Subpackages: ``qmamba.export`` (models, calibration, reference ops, ONNX export) and
``qmamba.runtime`` (ONNX Runtime reference, engines, generation).
"""

__version__ = "0.1.0"
