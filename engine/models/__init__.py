"""Models: where they come from (`sources`), how they are built (`configs`), written and read (`io`), loaded
into a segmenter (`loader`), and the locally built tokenizer (`tokenizer`).

`load_segmenter(source)` is the one way in; `save_model_folder` the one writer of model folders. The names
below are re-exported so callers write `from engine.models import load_segmenter`.
"""

from engine.errors import ModelSourceError
from engine.models.configs import (
    fit_config_to_tokenizer,
    full_size_config,
    new_model,
    processor_size_for,
    reinit_decoder,
    tiny_config,
)
from engine.models.io import image_processor, load_clipseg, make_random_model_folder, read_meta, save_model_folder
from engine.models.loader import DEFAULT_THRESHOLD, DEFAULT_TORCH_PRECISION, PRECISIONS, list_models, load_segmenter
from engine.models.sources import DEFAULT_HUB_ID, HUB_FILES, HUB_TIMEOUT_S, Source, hub_snapshot, resolve_source
from engine.paths import META_FILE, REPO_ROOT, STARTER_DIR  # kept importable from here for older callers

__all__ = [
    "DEFAULT_HUB_ID", "DEFAULT_THRESHOLD", "DEFAULT_TORCH_PRECISION", "HUB_FILES", "HUB_TIMEOUT_S", "META_FILE",
    "PRECISIONS", "REPO_ROOT", "STARTER_DIR", "ModelSourceError", "Source", "fit_config_to_tokenizer",
    "full_size_config", "hub_snapshot", "image_processor", "list_models", "load_clipseg", "load_segmenter",
    "make_random_model_folder", "new_model", "processor_size_for", "read_meta", "reinit_decoder",
    "resolve_source", "save_model_folder", "tiny_config",
]
