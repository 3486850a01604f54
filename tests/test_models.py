"""Model sources: local folders, runs, the Hub (offline here), and loud failures on bad weights."""

import json
import shutil
import time

import pytest
from safetensors.torch import load_file, save_file

from engine.models import (
    DEFAULT_HUB_ID, ModelSourceError, load_clipseg, load_segmenter, resolve_source, STARTER_DIR,
)
from engine.segmenter import Segmenter


def test_local_folder_loads_with_its_threshold(tiny_model_dir):
    seg = load_segmenter(tiny_model_dir, threads=1)
    assert isinstance(seg, Segmenter)
    assert seg.threshold == 0.5
    assert seg.input_size == 64


def test_run_folder_resolves_to_best(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "best")
    shutil.copytree(tiny_model_dir, run / "last")
    src = resolve_source(run)
    assert src.kind == "run" and src.path == (run / "best").resolve()


def test_folder_without_model_names_the_layouts(tmp_path):
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_source(tmp_path)


def test_missing_weights_fail_loudly(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    tensors = load_file(weights)
    dropped = [k for k in tensors if k.startswith("decoder.")]
    save_file({k: v for k, v in tensors.items() if k not in dropped}, weights, metadata={"format": "pt"})
    with pytest.raises(ModelSourceError, match="do not match"):
        load_clipseg(broken)


def test_mismatched_architecture_fails_loudly(tiny_model_dir, tmp_path):
    broken = tmp_path / "other"
    shutil.copytree(tiny_model_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["reduce_dim"] = 24  # weights were saved for reduce_dim 16
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelSourceError):
        load_clipseg(broken)


def test_no_weights_file(tiny_model_dir, tmp_path):
    broken = tmp_path / "noweights"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no weights"):
        load_clipseg(broken)


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
