"""engine.models.sources: local folders, runs, the Hub (offline here), and messages that name the alternatives."""

from __future__ import annotations

import shutil
import time

import pytest

from engine.models import DEFAULT_HUB_ID, ModelSourceError, resolve_source


def test_run_folder_resolves_to_best(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "best")
    shutil.copytree(tiny_model_dir, run / "last")
    src = resolve_source(run)
    assert src.kind == "run" and src.path == (run / "best").resolve()


def test_folder_without_model_names_the_layouts(tmp_path):
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_source(tmp_path)


@pytest.fixture
def empty_hub_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_hub_unreachable_fails_fast_with_alternatives(empty_hub_cache):
    start = time.perf_counter()
    with pytest.raises(ModelSourceError) as err:
        resolve_source(DEFAULT_HUB_ID)
    assert time.perf_counter() - start < 15
    message = str(err.value)
    assert "local model folder" in message and "HF_HUB_OFFLINE=1" in message and "drywall-starter" in message


def test_hub_offline_flag_is_respected(monkeypatch, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE"):
        resolve_source(DEFAULT_HUB_ID)


def test_unknown_source_message():
    with pytest.raises(ModelSourceError, match="neither an existing folder nor a Hub id"):
        resolve_source("no/such/thing/here")


def test_an_export_folder_resolves_as_onnx_and_a_file_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    assert resolve_source(tmp_path).kind == "onnx"
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelSourceError, match="is a file"):
        resolve_source(tmp_path / "file.txt")
