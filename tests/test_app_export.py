"""engine/app/export.py: the export's speed and parity rows (the export itself runs in tests/test_app.py)."""

import pytest

from engine.app.export import export_model, speed_rows, time_predict


class _Timed:
    """A segmenter stand-in that counts predict calls."""

    def __init__(self):
        self.calls = 0

    def predict(self, image, prompts):
        self.calls += 1
        return {p: None for p in prompts}


def test_time_predict_warms_up_once():
    seg = _Timed()
    assert time_predict(seg, "photo", ["segment crack"], repeats=3) >= 0 and seg.calls == 4


def test_speed_rows_names_each_precision():
    rows = speed_rows(_Timed(), {"fp32": _Timed(), "int8": _Timed()}, "photo", ["a", "b"])
    assert [r[0] for r in rows] == ["torch fp32 ms / photo (2 prompts)", "onnx fp32 ms / photo",
                                    "onnx fp32 speed-up vs torch", "onnx int8 ms / photo",
                                    "onnx int8 speed-up vs torch"]
    assert rows[2][1].endswith("x")


def test_export_refuses_an_onnx_export(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "manifest.json").write_text('{"files": {}}')
    with pytest.raises(ValueError, match="already an ONNX export"):
        export_model(str(tmp_path / "exp"), tmp_path / "out")


def test_export_folders_never_replace_another_models_export(tmp_path):
    import json

    from engine.app.export import _slug, export_folder

    assert _slug("Drywall-Starter") != _slug("drywall-starter") and _slug("a.b") != _slug("a-b")
    taken = tmp_path / "tiny-fp32"
    taken.mkdir()
    (taken / "manifest.json").write_text(json.dumps({"format": "drywall-qa-onnx", "format_version": 1,
                                                     "source": "run: tiny"}))
    assert export_folder(tmp_path, "tiny-fp32", "run: tiny") == taken  # the same model: its own folder again
    assert export_folder(tmp_path, "tiny-fp32", "my run: tiny") == tmp_path / "tiny-fp32-2"
    (tmp_path / "odd-fp32").mkdir()  # not an export at all: never overwritten either
    assert export_folder(tmp_path, "odd-fp32", "run: odd") == tmp_path / "odd-fp32-2"
