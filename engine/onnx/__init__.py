"""ONNX: `export` (export_onnx, parity check, report_rows/format_report), `graphs` (the three torch modules
exported, int8 quantization) and `runtime` (OnnxSegmenter, the export run by onnxruntime).

Nothing is re-exported here: onnx and onnxruntime load only when one of these modules is imported.
"""
