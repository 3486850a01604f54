"""engine.models.io: the one writer and reader of model folders; loud failures on bad weights."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from engine.models import ModelSourceError, load_clipseg, read_meta, save_model_folder
from engine.paths import META_FILE


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


def test_save_model_folder_round_trips_and_writes_extra_files(tiny_model_dir, tmp_path):
    model, tokenizer, processor = load_clipseg(tiny_model_dir)
    out = tmp_path / "saved"
    (out).mkdir()
    (out / "stale.txt").write_text("from before")  # the folder is replaced as a whole

    def extra(folder):
        (folder / "optimizer.pt").write_bytes(b"state")

    assert save_model_folder(model, tokenizer, out, image_size=64, meta={"threshold": 0.3}, extra=extra) == out
    assert (out / "optimizer.pt").read_bytes() == b"state" and not (out / "stale.txt").exists()
    assert read_meta(out) == {"threshold": 0.3} and json.loads((out / META_FILE).read_text())["threshold"] == 0.3
    again, _, processor2 = load_clipseg(out)
    assert processor2.size["height"] == 64
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not [p for p in tmp_path.iterdir() if p.name != "saved"]  # no temporary sibling left


def test_read_meta_of_a_folder_without_one_is_empty_and_bad_json_is_an_error(tmp_path):
    assert read_meta(tmp_path) == {}
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ModelSourceError, match="not valid JSON"):
        read_meta(tmp_path)
