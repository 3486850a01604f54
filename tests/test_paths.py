"""engine.paths: locations, default sets, and what kind of folder a path is."""

from __future__ import annotations

import json
from pathlib import Path

from engine.paths import (
    DEFAULT_PROMPTS,
    DEFAULT_SETS,
    MANIFEST_FILE,
    REPO_ROOT,
    STARTER_DIR,
    in_repo,
    is_model_folder,
    is_onnx_export,
)


def test_in_repo_resolves_relative_paths_against_the_repository_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert in_repo("checkpoints/x") == REPO_ROOT / "checkpoints" / "x"
    assert in_repo(tmp_path / "abs") == tmp_path / "abs"
    assert isinstance(in_repo("a"), Path)


def test_is_onnx_export_needs_the_manifest_only(tmp_path):
    assert not is_onnx_export(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")  # a model folder: config.json beside its weights
    assert not is_onnx_export(tmp_path) and is_model_folder(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": "drywall-qa-onnx"}))
    assert is_onnx_export(tmp_path) and is_onnx_export(str(tmp_path))
    assert not is_onnx_export(tmp_path / "missing")


def test_a_manifest_file_that_is_a_folder_is_not_an_export(tmp_path):
    (tmp_path / MANIFEST_FILE).mkdir()
    assert not is_onnx_export(tmp_path)


def test_default_prompts_are_the_sets_prompts_in_order():
    assert DEFAULT_PROMPTS == (*DEFAULT_SETS["cracks"], *DEFAULT_SETS["joints"])
    assert DEFAULT_PROMPTS[0] == "segment crack"
    assert STARTER_DIR.parent.parent == REPO_ROOT


def test_portable_paths_are_relative_to_the_repo_and_read_back():
    from engine.paths import REPO_ROOT, in_repo, portable

    shared = REPO_ROOT.parent / "shared" / "data" / "drywall-qa" / "cracks"
    assert portable(shared) == "../shared/data/drywall-qa/cracks"
    assert portable(REPO_ROOT / "checkpoints" / "run-1") == "checkpoints/run-1"
    assert portable("/etc/elsewhere") == "/etc/elsewhere"
    assert in_repo(portable(shared)).resolve() == shared.resolve()


def test_a_run_stopped_before_its_first_save_is_no_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # a run's TrainConfig, and no weights yet
    assert not is_model_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert is_model_folder(tmp_path)
