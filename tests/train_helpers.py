"""Fixtures shared by the training tests (import the fixture into a test module to use it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.train import DataSpec, make_config


@pytest.fixture
def tiny_cfg(tiny_model_dir, shared_data, tmp_path):
    """A 2-epoch run of the tiny model on 6 real photos of each set (4 for validation)."""

    def make(**overrides):
        values = dict(
            model=str(tiny_model_dir), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
            data=[DataSpec(str(shared_data / "cracks"), ("segment crack", "segment wall crack")),
                  DataSpec(str(shared_data / "joints"), ("segment taping area",))],
        )
        values.update(overrides)
        return make_config("tiny", **values)

    return make


REPO_ROOT = Path(__file__).resolve().parents[1]
