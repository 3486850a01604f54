"""Shared fixtures: the real data in ../shared and tiny CLIPSeg models built offline."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random CLIPSeg folder (trainable decoder init) with a locally built tokenizer, 64 px input."""
    from engine.models import make_random_model_folder

    return make_random_model_folder(tmp_path_factory.mktemp("models") / "tiny", meta={"threshold": 0.5})


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_model_dir):
    from engine.models import load_segmenter

    return load_segmenter(tiny_model_dir, threads=2)
