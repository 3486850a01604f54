"""engine.models.loader: load_segmenter and list_models."""

from __future__ import annotations

import shutil

import pytest
import torch

from engine.models import ModelSourceError, list_models, load_segmenter
from engine.segmenter import Segmenter


def test_local_folder_loads_with_its_threshold(tiny_model_dir):
    seg = load_segmenter(tiny_model_dir, threads=1)
    assert isinstance(seg, Segmenter)
    assert seg.threshold == 0.5
    assert seg.input_size == 64


def test_loading_leaves_torch_threads_alone(tiny_model_dir):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seg = load_segmenter(tiny_model_dir, threads=want, precision="fp32")
    assert torch.get_num_threads() == before  # process-wide: the entry point's job, never a constructor's
    assert seg.threads == want


def test_precision_errors_say_what_to_do(tiny_model_dir):
    with pytest.raises(ValueError, match="precision must be one of"):
        load_segmenter(tiny_model_dir, precision="fp16")
    with pytest.raises(ModelSourceError, match="int8 runs through ONNX: export the model first"):
        load_segmenter(tiny_model_dir, precision="int8")


def test_list_models_offers_the_bundled_model_first_then_zero_shot_auto_runs_and_exports(tiny_model_dir, tmp_path):
    runs, exports = tmp_path / "checkpoints", tmp_path / "export"
    shutil.copytree(tiny_model_dir, runs / "run-a" / "best")
    (runs / "empty").mkdir()
    (exports / "exp").mkdir(parents=True)
    (exports / "exp" / "manifest.json").write_text("{}")
    choices = list_models(runs, exports)
    from engine.models.loader import BUNDLED_LABEL, ZERO_SHOT_LABEL
    from engine.paths import DEFAULT_HUB_ID, STARTER_DIR

    assert choices[:3] == [(BUNDLED_LABEL, str(STARTER_DIR)), (ZERO_SHOT_LABEL, DEFAULT_HUB_ID),
                           (f"auto ({DEFAULT_HUB_ID}, else the bundled model)", "auto")]
    assert "not trained on walls" in ZERO_SHOT_LABEL and "trained on walls" in BUNDLED_LABEL
    assert ("run: run-a", str(runs / "run-a")) in choices and ("onnx: exp", str(exports / "exp")) in choices
    assert not any("empty" in label for label, _ in choices)


def test_list_models_skips_runs_that_never_saved(tiny_model_dir, tmp_path):
    runs = tmp_path / "checkpoints"
    never = runs / "killed-early"  # stopped before its first save: TrainConfig and metrics, no best/ or last/
    never.mkdir(parents=True)
    (never / "config.json").write_text('{"epochs": 3}')
    (never / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n')
    (runs / "half" / "best").mkdir(parents=True)  # a model config without weights is not a model either
    (runs / "half" / "best" / "config.json").write_text("{}")
    shutil.copytree(tiny_model_dir, runs / "last-only" / "last")
    shutil.copytree(tiny_model_dir, runs / "plain-folder")
    labels = [label for label, _ in list_models(runs, tmp_path / "export")]
    assert [lb for lb in labels if lb.startswith("run:")] == ["run: last-only", "run: plain-folder"]
