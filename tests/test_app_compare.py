"""engine/app/compare.py: which labelled set and prompts a comparison reads, and the runs' histories."""

import pytest

from engine.app.compare import eval_data_for, open_eval_set, read_history


def test_open_eval_set_picks_the_valid_split_and_limits(shared_data):
    ds = open_eval_set(shared_data / "cracks", ["segment crack"], limit=3)
    assert len(ds) == 3 and all(item.image_path.parent.parent.name == "valid" for item in ds.items)


def test_read_history_tolerates_a_cut_line(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "tra')
    assert read_history(tmp_path / "best") == [{"epoch": 1, "train_loss": 0.5}]
    assert read_history(tmp_path) == [{"epoch": 1, "train_loss": 0.5}]
    assert read_history(tmp_path / "nothing") == []


def test_eval_data_for_each_choice(tmp_path):
    assert eval_data_for("cracks", data_root=tmp_path) == (tmp_path / "cracks", ("segment crack", "segment wall crack"))
    assert eval_data_for("zip", data_root=tmp_path, zip_file="/up/a.zip") == ("/up/a.zip", ())
    assert eval_data_for("folder", data_root=tmp_path, folder="/data/x") == ("/data/x", ())
    with pytest.raises(ValueError, match="No zip uploaded"):
        eval_data_for("zip", data_root=tmp_path)
