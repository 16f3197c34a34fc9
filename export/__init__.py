"""PyTorch side: W8A8 Mamba2 reference modules, calibration, checkpoints, ONNX export."""
