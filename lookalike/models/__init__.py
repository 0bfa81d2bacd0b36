"""Models: EfficientNet-Lite (ONNX, built without torch) and ImageNet labels."""
