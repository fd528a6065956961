"""Host-side conversion: ONNX (and training/export scripts). Needs the `onnx` package."""
