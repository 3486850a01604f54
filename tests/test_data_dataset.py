"""engine.data.dataset: opening the real drywall sets, layouts, splits, subsets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from engine.data import LabelError, LabelledSet, open_dataset, source_photo_id
from tests.data_helpers import SHARED_DATA, yolo_split


@pytest.mark.parametrize("set_name,split,count", [("cracks", "train", 905), ("cracks", "valid", 141),
                                                  ("joints", "valid", 24)])
def test_real_sets_open_with_expected_counts(set_name, split, count):
    dataset = open_dataset(SHARED_DATA / set_name, split=split, prompts=("segment crack",))
    assert len(dataset) == count and len(set(dataset.ids)) == count
    assert dataset.name == set_name and dataset.prompts == ("segment crack",)
    assert dataset.root == SHARED_DATA / set_name / split
    assert all(item.label_path.suffix == ".txt" and item.image_id == item.image_path.stem for item in dataset.items)


@pytest.mark.parametrize("set_name", ["cracks", "joints"])
def test_real_valid_masks_are_non_empty_booleans_of_image_size(set_name):
    dataset = open_dataset(SHARED_DATA / set_name / "valid")
    for i in range(len(dataset)):
        mask = dataset.mask(i)
        assert mask.dtype == np.bool_ and mask.shape == (640, 640), dataset.items[i]
        assert 0 < mask.sum() < mask.size, dataset.items[i]
    image, mask = dataset[0]
    assert image.mode == "RGB" and image.size == (640, 640) and np.array_equal(mask, dataset.mask(0))


def test_real_box_label_is_a_filled_rectangle():
    dataset = open_dataset(SHARED_DATA / "joints", split="valid")
    index = next(i for i, item in enumerate(dataset.items) if len(item.label_path.read_text().split()) == 5)
    _, cx, cy, w, h = map(float, dataset.items[index].label_path.read_text().split())
    mask = dataset.mask(index)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # filled, nothing outside its bounding box
    assert mask.sum() == len(rows) * len(cols)
    assert abs(len(cols) - w * 640) <= 1 and abs(len(rows) - h * 640) <= 1
    assert abs(cols[0] - (cx - w / 2) * 640) <= 1 and abs(rows[0] - (cy - h / 2) * 640) <= 1


def test_real_root_needs_a_split():
    with pytest.raises(ValueError, match=r"several splits \(train, valid\); pass split="):
        open_dataset(SHARED_DATA / "cracks")
    with pytest.raises(ValueError, match="no split 'test'; pass one of: train, valid"):
        open_dataset(SHARED_DATA / "cracks", split="test")
    assert len(open_dataset(SHARED_DATA / "cracks", split="val")) == 141  # "val" (data.yaml's key) = valid
    assert len(open_dataset(SHARED_DATA / "joints" / "data.yaml", split="valid")) == 24
    with pytest.raises(ValueError, match="already one split folder"):
        open_dataset(SHARED_DATA / "joints" / "valid", split="train")


def test_roboflow_root_with_dotdot_yaml_and_names(tmp_path):
    root = tmp_path / "export"
    yolo_split(root / "train", {"t1": "0 0.5 0.5 0.2 0.2", "t2": "1 0.5 0.5 0.4 0.4"})
    yolo_split(root / "valid", {"v1": "0 0.5 0.5 0.2 0.2"})
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['crack', 'wall']\n")
    assert open_dataset(root, split="train", name="walls").name == "walls"
    assert open_dataset(root, split="valid").ids == ["v1"]
    only_cracks = open_dataset(root, split="train", categories=["crack"])
    assert only_cracks.mask(0).sum() > 0 and not only_cracks.mask(1).any()  # t2 holds only class 1
    with pytest.raises(ValueError, match="Unknown category 'tape'"):
        open_dataset(root, split="train", categories=["tape"])


def test_unknown_layout_lists_the_accepted_ones(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(ValueError, match="Accepted layouts: .*YOLO.*COCO.*masks"):
        open_dataset(tmp_path / "random")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")


def test_set_split_keeps_roboflow_copies_together(tmp_path):
    labels = {f"photo{k}_jpg.rf.{copy:02d}ab": "0 0.5 0.5 0.2 0.2" for k in range(8) for copy in range(k % 3 + 1)}
    dataset = open_dataset(yolo_split(tmp_path / "set", labels))
    train, valid = dataset.split((0.75, 0.25), seed=1)
    assert len(train) + len(valid) == len(dataset) == 15 and len(valid) > 0
    photos = [{source_photo_id(item.image_path.name) for item in part.items} for part in (train, valid)]
    assert photos[0].isdisjoint(photos[1])
    assert [s.ids for s in dataset.split((0.75, 0.25), seed=1)] == [train.ids, valid.ids]
    assert isinstance(train, LabelledSet) and train.name == dataset.name
    assert np.array_equal(train.mask(0), dataset.mask(dataset.ids.index(train.ids[0])))


def test_subset_and_index_errors(tmp_path):
    dataset = open_dataset(yolo_split(tmp_path / "set", {"a": "", "b": "", "c": ""}))
    assert dataset.subset([2, 0]).ids == ["c", "a"]
    with pytest.raises(IndexError, match="out of range"):
        dataset.subset([3])


def test_label_error_pickles():
    error = pickle.loads(pickle.dumps(LabelError(Path("x.txt"), "bad", 3)))
    assert str(error) == "x.txt line 3: bad" and error.line == 3


@pytest.mark.parametrize("entry", ["/etc", "/tmp/elsewhere/images", "C:/data/train/images"])
def test_data_yaml_entry_outside_the_root_is_refused(tmp_path, entry):
    root = tmp_path / "export"
    yolo_split(root / "train", {"t1": "0 0.5 0.5 0.2 0.2"})
    (root / "data.yaml").write_text(f"train: train/images\nval: {entry}\n")
    with pytest.raises(LabelError, match=rf"data\.yaml: val: '{entry}' points outside the data set's folder"):
        open_dataset(root, split="train")


def test_data_yaml_never_reads_beside_the_root(tmp_path):
    yolo_split(tmp_path / "valid", {"secret": "0 0.5 0.5 0.2 0.2"})  # a real split next to the root
    root = tmp_path / "export"
    yolo_split(root / "train", {"t1": "0 0.5 0.5 0.2 0.2"})
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n")  # Roboflow's style
    assert open_dataset(root).ids == ["t1"]  # the one split inside; ../valid is root/valid, absent here
    (root / "valid").symlink_to(tmp_path / "valid")  # a split folder that links out of the root
    with pytest.raises(LabelError, match=r"val: '\.\./valid/images' points outside the data set's folder"):
        open_dataset(root, split="train")
    (root / "data.yaml").unlink()
    assert open_dataset(root).ids == ["t1"]  # the folder scan skips the link too


def test_shared_sets_still_open_with_containment(shared_data):
    assert len(open_dataset(shared_data / "cracks", split="valid")) > 0
    assert len(open_dataset(shared_data / "joints", split="train")) > 0
