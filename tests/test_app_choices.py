"""engine/app/choices.py: the pickers' models and their short names."""

from engine.app.choices import model_choices, model_label, public_choices
from engine.models import make_random_model_folder


def test_model_label(tmp_path):
    assert model_label(str(tmp_path / "run-1" / "best")) == "run-1"
    assert model_label(str(tmp_path / "run-1"), "bf16") == "run-1 (bf16)"
    assert model_label("CIDAS/clipseg-rd64-refined") == "CIDAS/clipseg-rd64-refined"


def test_model_choices_lists_runs_and_exports(tmp_path):
    make_random_model_folder(tmp_path / "checkpoints" / "tiny")
    (tmp_path / "export" / "tiny-fp32").mkdir(parents=True)
    (tmp_path / "export" / "tiny-fp32" / "manifest.json").write_text("{}")
    every = model_choices(tmp_path / "checkpoints", tmp_path / "export")
    assert ("run: tiny", str(tmp_path / "checkpoints" / "tiny")) in every
    assert ("onnx: tiny-fp32", str(tmp_path / "export" / "tiny-fp32")) in every
    torch_only = model_choices(tmp_path / "checkpoints", tmp_path / "export", torch_only=True)
    assert [c for c in every if c not in torch_only] == [("onnx: tiny-fp32", str(tmp_path / "export" / "tiny-fp32"))]
    custom = model_choices(tmp_path / "checkpoints", tmp_path / "export", default=str(tmp_path / "other"))
    assert custom[0] == ("other (default)", str(tmp_path / "other")) and custom[1:] == every
    assert model_choices(tmp_path / "checkpoints", tmp_path / "export", default="auto") == every


def test_public_choices_name_no_server_path(tmp_path):
    choices = [("auto (hub)", "auto"), ("run: tiny", str(tmp_path / "tiny")), ("hub", "CIDAS/clipseg-rd64-refined")]
    assert public_choices(choices) == [("auto (hub)", "auto"), ("run: tiny", "run: tiny"),
                                       ("hub", "CIDAS/clipseg-rd64-refined")]
