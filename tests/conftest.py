"""Shared fixtures: the real data in ../shared and tiny CLIPSeg models built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "drywall-qa"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/drywall-qa; a missing copy is an error, not a skip (CI must have it)."""
    if not (SHARED_DATA / "cracks").is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests read the real photos from ../shared beside the repo.")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory):
    """XDG_CACHE_HOME in a temporary folder: the precision measurements the tests make (inference's `auto`, a
    run that trains the tower) are cached there, never in the user's own cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random CLIPSeg folder (trainable decoder init) with a locally built tokenizer, 64 px input."""
    from engine.models import make_random_model_folder

    return make_random_model_folder(tmp_path_factory.mktemp("models") / "tiny", meta={"threshold": 0.5})


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_model_dir):
    from engine.models import load_segmenter

    return load_segmenter(tiny_model_dir, threads=2)


# ----------------------------------------------------------------------------------- ONNX (one export per session)

EXPORT_PROMPTS = ["segment crack", "segment taping area", "segment joint/tape"]


@pytest.fixture(scope="session")
def photos(shared_data):
    """Three real photos (cracks/valid), RGB."""
    from PIL import Image

    paths = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[:3]
    assert len(paths) == 3
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="session")
def export_dir(tiny_model_dir, photos, tmp_path_factory):
    """The tiny model exported with --int8 (parity checked on two real photos)."""
    from engine.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("exports") / "tiny"
    export_onnx(tiny_model_dir, out, int8=True, images=photos[:2], prompts=EXPORT_PROMPTS, threads=2)
    return out


@pytest.fixture(scope="session")
def onnx_fp32(export_dir):
    from engine.onnx.runtime import OnnxSegmenter

    return OnnxSegmenter(export_dir, threads=2, int8=False)


@pytest.fixture(scope="session")
def torch_fp32(tiny_model_dir):
    """The torch reference in fp32 (the default precision may be bf16 on this CPU)."""
    from engine.models import load_segmenter

    return load_segmenter(tiny_model_dir, threads=2, precision="fp32")
