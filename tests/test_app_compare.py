"""engine/app/compare.py: which labelled set and prompts a comparison reads, and the runs' histories."""

import pytest
from PIL import Image

from engine.app.compare import MAX_GALLERY_SIDE, compare_models, eval_data_for, open_eval_set, panel_size, read_history
from tests.data_helpers import yolo_split


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


@pytest.mark.parametrize("photo, n", [((6000, 800), 4), ((800, 6000), 2), ((640, 480), 2), ((16000, 400), 9)])
def test_panel_size_keeps_a_row_within_the_bound(photo, n):
    w, h = panel_size(photo, n)
    assert n * w + 8 * (n + 1) <= MAX_GALLERY_SIDE and h + 60 <= MAX_GALLERY_SIDE
    assert w <= photo[0] and h <= photo[1] and abs(w / h - photo[0] / photo[1]) / (photo[0] / photo[1]) < 0.15
    assert panel_size((640, 480), 2) == (640, 480)  # small photos are never scaled up


@pytest.mark.slow
def test_compare_three_models_on_wide_photos_keeps_gallery_images_small(tmp_path, tiny_model_dir):
    from engine.models import make_random_model_folder
    from engine.models.cache import ModelCache

    split = yolo_split(tmp_path / "wide" / "valid", {"a": "0 0.5 0.5 0.3 0.5", "b": "0 0.2 0.5 0.1 0.8"})
    for stem in ("a", "b"):  # 6000 x 800 photos: a panorama's shape
        Image.new("RGB", (6000, 800), (120, 110, 100)).save(split / "images" / f"{stem}.png")
    models = [str(tiny_model_dir), str(make_random_model_folder(tmp_path / "m1", seed=1)),
              str(make_random_model_folder(tmp_path / "m2", seed=2))]
    result = compare_models(ModelCache(maxsize=4), models, split, ["segment crack"], n_show=2, k_worst=1)
    assert len(result.gallery) == 2 and len(result.rows) == 3
    for image, caption in result.gallery:
        assert max(image.size) <= MAX_GALLERY_SIDE and image.width > 1200, image.size
        assert caption.count(",") == 2  # an IoU per model, computed on the full-size masks


def test_absent_sets_are_the_other_shared_sets(tmp_path):
    from engine.app.compare import absent_sets_for
    from engine.paths import DEFAULT_SETS

    assert absent_sets_for("cracks", data_root=tmp_path) == [(tmp_path / "joints", DEFAULT_SETS["joints"])]
    assert absent_sets_for("joints", data_root=tmp_path) == [(tmp_path / "cracks", DEFAULT_SETS["cracks"])]
    assert absent_sets_for("zip", data_root=tmp_path) == absent_sets_for("folder", data_root=tmp_path) == []
