"""Drywall QA engine: CLIPSeg loading, segmentation, data, evaluation, training, export and drawing.

`import engine` loads no model and starts nothing; the names below are imported on first use.
"""

import importlib

_EXPORTS = {
    "load_segmenter": "engine.models.loader",
    "resolve_source": "engine.models.sources",
    "ModelSourceError": "engine.errors",
    "Segmenter": "engine.segmenter",
    "load_image": "engine.images",
    "ImageError": "engine.errors",
    "open_dataset": "engine.data.dataset",
    "parse_prompts": "engine.prompts",
    "evaluate": "engine.evaluate",
    "TrainConfig": "engine.train",
    "make_config": "engine.train",
    "train": "engine.train",
    "get_job": "engine.train",
    "export_onnx": "engine.onnx.export",
    "OnnxSegmenter": "engine.onnx.runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
