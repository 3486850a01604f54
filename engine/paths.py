"""Where things live: the repository, the shared data, the caches, and what kind of folder a path is.

Every default location and the default data sets with their prompts are written here once; the CLI, the app,
training and the benchmarks read them from here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
EXPORT_DIR = REPO_ROOT / "export"
LABELS_DIR = REPO_ROOT / "labels"  # the local user's label sets (engine.data.labelset); not tracked
EXAMPLES_DIR = REPO_ROOT / "examples"
STARTER_DIR = CHECKPOINTS_DIR / "drywall-starter"
# The models the repository ships (the bundled model and its stage 1): read-only to the app, never pruned.
SHIPPED_MODELS = (STARTER_DIR, CHECKPOINTS_DIR / "drywall-starter-base")
FEATURE_CACHE_DIR = ".cache/features"  # relative to REPO_ROOT unless a TrainConfig gives an absolute path
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "drywall-qa"
DEFAULT_HUB_ID = "CIDAS/clipseg-rd64-refined"  # pretrained CLIPSeg on the Hub: zero-shot, and training's start

# The two labelled sets in SHARED_DATA and the prompts (synonyms) each one teaches, first prompt first.
DEFAULT_SETS: dict[str, tuple[str, ...]] = {
    "cracks": ("segment crack", "segment wall crack"),
    "joints": ("segment taping area", "segment joint/tape", "segment drywall seam"),
}
DEFAULT_PROMPTS: tuple[str, ...] = tuple(p for prompts in DEFAULT_SETS.values() for p in prompts)

META_FILE = "drywall_qa.json"  # this project's settings beside a Hugging Face model folder's config.json
MANIFEST_FILE = "manifest.json"  # what marks an ONNX export folder


def in_repo(path: str | os.PathLike) -> Path:
    """`path` itself when absolute, else relative to the repository root (not the working directory)."""
    path = Path(path)
    return path if path.is_absolute() else Path(os.path.normpath(REPO_ROOT / path))  # "../shared" without ".."


def portable(path: str | os.PathLike) -> str:
    """`path` as it is stored in a run's files: relative to the repository root when it lies in the repository
    or beside it (../shared/data/...), so a clone elsewhere reads the same; other paths stay absolute.
    `in_repo` turns it back into a path."""
    absolute = Path(os.path.abspath(in_repo(path)))  # links kept: ../shared may be a link to the data
    if absolute.is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(absolute, REPO_ROOT)
    return str(path)


def is_onnx_export(path: str | os.PathLike) -> bool:
    """True for a folder written by `engine.onnx.export.export_onnx` (it holds manifest.json)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a saved Hugging Face model folder: config.json beside its weights (*.safetensors or *.bin).

    A training run's own folder also holds a config.json (its TrainConfig), and a run stopped before its first
    save holds nothing else, so config.json alone does not make a model.
    """
    path = Path(path)
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))
