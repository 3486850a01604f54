"""ONNX export (`export`) and the onnxruntime segmenter (`runtime`)."""
