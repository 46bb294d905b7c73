"""Build-time model zoo: torch definitions exported to ONNX training artifacts."""
