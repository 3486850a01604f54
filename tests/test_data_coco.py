"""engine.data.coco: COCO JSON (polygons, RLE, boxes), categories and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.data import LabelError, LabelWarning, open_dataset
from tests.data_helpers import H, W, known_mask, make_image, rle_encode, rle_string


def _coco(tmp_path: Path, annotations: list[dict], extra_images=(), folder_name="coco") -> Path:
    folder = tmp_path / folder_name
    images = []
    for image_id, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", *extra_images]):
        make_image(folder / name)
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
    categories = [{"id": 0, "name": "cracks-x", "supercategory": "none"},
                  {"id": 1, "name": "crack", "supercategory": "cracks-x"}]
    (folder / "_annotations.coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return folder


def _coco_annotations() -> list[dict]:
    counts = rle_encode(known_mask())
    return [
        {"id": 0, "image_id": 0, "category_id": 1, "segmentation": [[8, 8, 40, 8, 40, 32, 8, 32]],
         "bbox": [8, 8, 32, 24]},
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": counts}},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": {"size": [H, W], "counts": rle_string(counts)},
         "iscrowd": 1},
        {"id": 3, "image_id": 3, "category_id": 1, "segmentation": [], "bbox": [10, 20, 30, 15]},
        {"id": 4, "image_id": 4, "category_id": 0, "bbox": [0, 0, W, H]},  # Roboflow's dataset-level category
    ]


def test_coco_polygon_rle_bbox(tmp_path):
    folder = _coco(tmp_path, _coco_annotations())
    for dataset in (open_dataset(folder), open_dataset(folder / "_annotations.coco.json")):
        assert dataset.ids == ["a", "b", "c", "d", "e"]
        assert 32 * 24 <= dataset.mask(0).sum() <= 33 * 25 and dataset.mask(0)[20, 20]
        assert np.array_equal(dataset.mask(1), known_mask())  # uncompressed RLE
        assert np.array_equal(dataset.mask(2), known_mask())  # compressed RLE
        expected = np.zeros((H, W), bool)
        expected[20:35, 10:40] = True
        assert np.array_equal(dataset.mask(3), expected)  # bbox only: the filled rectangle
        assert not dataset.mask(4).any()  # background category ignored
    everything = open_dataset(folder, categories=["cracks-x", "crack"])
    assert everything.mask(4).all()


def test_coco_export_root_with_splits(tmp_path):
    _coco(tmp_path, _coco_annotations(), folder_name="export/train")
    _coco(tmp_path, _coco_annotations()[:2], extra_images=["f.jpg"], folder_name="export/valid")
    with pytest.raises(ValueError, match=r"several splits \(train, valid\)"):
        open_dataset(tmp_path / "export")
    valid = open_dataset(tmp_path / "export", split="val")
    assert valid.ids == ["a", "b", "c", "d", "e", "f"] and valid.name == "export"
    assert valid.mask(1).sum() == known_mask().sum() and not valid.mask(2).any()


def test_coco_unknown_image_id(tmp_path):
    annotations = _coco_annotations()
    annotations.insert(2, {"id": 9, "image_id": 77, "category_id": 1, "bbox": [1, 1, 2, 2]})
    folder = _coco(tmp_path, annotations)
    with pytest.raises(LabelError, match=r"_annotations\.coco\.json annotation 2: image_id 77 is not in 'images'"):
        open_dataset(folder)
    with pytest.warns(LabelWarning, match="annotation 2"):
        assert len(open_dataset(folder, skip_bad=True)) == 5


@pytest.mark.parametrize("segmentation,reason", [
    ([[1, 1, 5, 1, 5]], "odd number of polygon coordinates (5)"),
    ([[1, 1, 500, 1, 5, 5]], "coordinate 7.8125 is far outside [0, 1]"),
    ({"size": [H, W], "counts": [3, 4]}, "add up to 7 pixels"),
    ({"size": [10, 10], "counts": [100]}, "differs from the image's"),
])
def test_coco_bad_annotations(tmp_path, segmentation, reason):
    annotations = _coco_annotations()
    annotations[1]["segmentation"] = segmentation
    folder = _coco(tmp_path, annotations)
    with pytest.raises(LabelError) as info:
        open_dataset(folder)
    assert str(info.value).startswith(f"{folder / '_annotations.coco.json'} annotation 1: ")
    assert reason in str(info.value)
    with pytest.warns(LabelWarning):
        assert open_dataset(folder, skip_bad=True).ids == ["a", "c", "d", "e"]


def test_coco_image_size_must_match_json(tmp_path):
    folder = _coco(tmp_path, _coco_annotations())
    make_image(folder / "e.jpg", size=(10, 10))
    with pytest.raises(LabelError, match=r"e\.jpg is 10x10 but the json says 64x48"):
        open_dataset(folder)


@pytest.mark.parametrize("file_name", ["../outside.jpg", "/tmp/outside.jpg", "sub/../../outside.jpg",
                                       "..\\outside.jpg", "C:/photos/outside.jpg"])
def test_coco_file_name_outside_its_folder_is_refused(tmp_path, file_name):
    folder = _coco(tmp_path, [])
    make_image(tmp_path / "outside.jpg")  # exists, so only the containment check can refuse it
    data = json.loads((folder / "_annotations.coco.json").read_text())
    data["images"].append({"id": 99, "file_name": file_name, "width": W, "height": H})
    (folder / "_annotations.coco.json").write_text(json.dumps(data))
    for skip_bad in (False, True):  # never skipped quietly: the whole file is refused
        with pytest.raises(LabelError, match=r"images\[5\]: file_name .* points outside the folder of "
                                             r"_annotations\.coco\.json") as err:
            open_dataset(folder, skip_bad=skip_bad)
        assert str(tmp_path / "outside.jpg") not in str(err.value)


def test_coco_file_name_linking_outside_is_refused(tmp_path):
    folder = _coco(tmp_path, [])
    make_image(tmp_path / "secret.jpg")
    (folder / "f.jpg").symlink_to(tmp_path / "secret.jpg")
    (folder / "sub").mkdir()
    data = json.loads((folder / "_annotations.coco.json").read_text())
    data["images"].append({"id": 99, "file_name": "f.jpg", "width": W, "height": H})
    (folder / "_annotations.coco.json").write_text(json.dumps(data))
    with pytest.raises(LabelError, match=r"file_name 'f\.jpg' is a link to a file outside the folder"):
        open_dataset(folder, skip_bad=True)
    (folder / "f.jpg").unlink()
    (folder / "f.jpg").symlink_to(folder / "a.jpg")  # a link that stays inside is fine
    assert open_dataset(folder).ids[-1] == "f"
