"""engine.data: the real drywall sets, and small synthetic sets for every layout and every error."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import (
    LabelError,
    LabelledSet,
    LabelWarning,
    decode_rle,
    open_dataset,
    parse_data_arg,
    rle_counts_from_string,
    source_photo_id,
    split_groups,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "drywall-qa"
W, H = 64, 48  # synthetic image size


# --------------------------------------------------------------------------------------------- helpers


def _image(path: Path, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


def _yolo_split(folder: Path, labels: dict[str, str | None]) -> Path:
    """A YOLO split folder: one PNG per stem, and its label text (None: no label file)."""
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        _image(folder / "images" / f"{stem}.png")
        if text is not None:
            (folder / "labels" / f"{stem}.txt").write_text(text)
    return folder


def _rle_encode(mask: np.ndarray) -> list[int]:
    """COCO runs of a (H, W) bool mask: column-major, starting with a run of 0s."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat[0] else runs


def _rle_string(counts: list[int]) -> str:
    """pycocotools rleToString, written out: 5-bit groups, deltas from the run two back after the second."""
    out = []
    for i, value in enumerate(counts):
        if i > 2:
            value -= counts[i - 2]
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(group + (0x20 if more else 0) + 48))
    return "".join(out)


# ------------------------------------------------------------------------------------------ real data


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


# ---------------------------------------------------------------------------------------------- YOLO


def test_yolo_box_polygon_union_and_empty(tmp_path):
    folder = _yolo_split(tmp_path / "set", {
        "box": "0 0.5 0.5 0.5 0.5\n",  # 32 x 24 px box centred
        "square": "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75",
        "two": "\n0 0 0 0.25 0 0.25 0.25\n\n0 0.9 0.9 0.1 0.1\n",  # a triangle and a box; blank lines
        "empty": "",
    })
    dataset = open_dataset(folder)
    assert dataset.ids == ["box", "empty", "square", "two"]
    box = dataset.mask(0)
    assert box.shape == (H, W) and box.sum() == 32 * 24 and box[12:36, 16:48].all()
    assert not dataset.mask(1).any()
    square = dataset.mask(2).sum()
    assert 32 * 24 <= square <= 33 * 25  # PIL fills edges too: at most one extra row and column
    two = dataset.mask(3)
    assert two[0, 0] and two[45, 60] and not two[24, 32]
    assert two[:14, :18].sum() + two[40:, 54:].sum() == two.sum()


def test_yolo_slightly_outside_is_clipped(tmp_path):
    folder = _yolo_split(tmp_path / "set", {"a": "0 -0.02 -0.03 1.04 -0.01 1.03 1.02 0.0 1.0"})
    assert open_dataset(folder).mask(0).mean() > 0.4


@pytest.mark.parametrize("text,line,reason", [
    ("0 0.1 0.1 0.5 0.1 0.5 0.5\n\n0 0.1 0.2 0.3 0.4 0.5 0.6 0.7\n", 3,
     "odd number of polygon coordinates (7); each point needs x and y"),
    ("0 0.1 0.1 0.2 0.2 0.3 1.5\n", 1, "coordinate 1.5 is far outside [0, 1]"),
    ("0 0.5 0.5 0.5 0.5\n0 -0.2 0.5 0.1 0.1\n", 2, "far outside [0, 1]"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3\n0 0.1 abc 0.2 0.2 0.3 0.3\n", 2, "non-numeric value 'abc'"),
    ("0 0.1 0.1\n", 1, "at least 3 points, got 1"),
    ("x 0.1 0.1 0.2 0.2 0.3 0.3\n", 1, "class id 'x'"),
    ("0 0.5 0.5 -0.1 0.2\n", 1, "box width and height must be >= 0"),
])
def test_yolo_errors_name_file_and_line(tmp_path, text, line, reason):
    folder = _yolo_split(tmp_path / "set", {"ok": "0 0.5 0.5 0.2 0.2", "bad": text})
    with pytest.raises(LabelError) as info:
        open_dataset(folder)
    label = folder / "labels" / "bad.txt"
    assert str(info.value).startswith(f"{label} line {line}: ") and reason in str(info.value)
    assert info.value.path == label and info.value.line == line


def test_missing_label_raises_or_is_skipped(tmp_path):
    folder = _yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2", "b": None, "c": ""})
    with pytest.raises(LabelError, match=r"b\.png: no label file .*b\.txt; add an empty \.txt"):
        open_dataset(folder)
    with pytest.warns(LabelWarning, match=r"skipped: .*b\.png: no label file"):
        dataset = open_dataset(folder, skip_bad=True)
    assert dataset.ids == ["a", "c"]


def test_skip_bad_drops_bad_label_files(tmp_path):
    folder = _yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2", "b": "0 0.1 0.2 0.3\n", "c": "0 9 9 9 9"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset(folder, skip_bad=True)
    assert dataset.ids == ["a"]
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, LabelWarning))
    assert len(messages) == 2
    assert "b.txt line 1: odd number" in messages[0] and "c.txt line 1: coordinate 13.5 is far outside" in messages[1]


def test_label_without_image_warns_and_is_ignored(tmp_path):
    folder = _yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2"})
    (folder / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2")
    with pytest.warns(LabelWarning, match=r"1 label file\(s\) without an image .*ghost\.txt"):
        assert open_dataset(folder).ids == ["a"]


def test_roboflow_root_with_dotdot_yaml_and_names(tmp_path):
    root = tmp_path / "export"
    _yolo_split(root / "train", {"t1": "0 0.5 0.5 0.2 0.2", "t2": "1 0.5 0.5 0.4 0.4"})
    _yolo_split(root / "valid", {"v1": "0 0.5 0.5 0.2 0.2"})
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


# --------------------------------------------------------------------------------------- mask folders


def test_mask_folder(tmp_path):
    folder = tmp_path / "set"
    _image(folder / "images" / "a.jpg")
    _image(folder / "images" / "b.jpg")
    (folder / "masks").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[5:10, 20:30] = 255
    Image.fromarray(mask).save(folder / "masks" / "a.png")
    Image.fromarray(np.stack([mask // 255] * 3, axis=-1)).save(folder / "masks" / "b_mask.png")  # RGB 0/1
    dataset = open_dataset(folder)
    assert dataset.ids == ["a", "b"]
    assert np.array_equal(dataset.mask(0), mask > 0) and np.array_equal(dataset[1][1], mask > 0)


def test_mask_of_other_size(tmp_path):
    folder = tmp_path / "set"
    _image(folder / "images" / "a.jpg")
    _image(folder / "images" / "b.jpg")
    (folder / "masks").mkdir()
    Image.new("L", (W, H)).save(folder / "masks" / "a.png")
    Image.new("L", (W // 2, H // 2)).save(folder / "masks" / "b.png")
    with pytest.raises(LabelError) as info:
        open_dataset(folder)
    message = str(info.value)
    assert str(folder / "masks" / "b.png") in message and str(folder / "images" / "b.jpg") in message
    assert "32x24" in message and "64x48" in message
    with pytest.warns(LabelWarning, match="mask is 32x24"):
        assert open_dataset(folder, skip_bad=True).ids == ["a"]


# ------------------------------------------------------------------------------------------------ COCO


def _known_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[3:40, 50:63] = True
    mask[0, 0] = mask[H - 1, W - 1] = True  # runs at both ends
    mask[10:12, 5:45] = True  # long runs (> 31): multi-group numbers; shorter next to longer: negative deltas
    return mask


def test_rle_string_codec():
    assert rle_counts_from_string("1232") == [1, 2, 3, 4]  # 4th stored as 4 - 2
    counts = _rle_encode(_known_mask())
    assert counts[0] == 0 and sum(counts) == H * W
    assert rle_counts_from_string(_rle_string(counts)) == counts
    assert np.array_equal(decode_rle(counts, (H, W)), _known_mask())
    with pytest.raises(ValueError, match="add up to"):
        decode_rle([5, 5], (H, W))


def _coco(tmp_path: Path, annotations: list[dict], extra_images=(), folder_name="coco") -> Path:
    folder = tmp_path / folder_name
    images = []
    for image_id, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", *extra_images]):
        _image(folder / name)
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
    categories = [{"id": 0, "name": "cracks-x", "supercategory": "none"},
                  {"id": 1, "name": "crack", "supercategory": "cracks-x"}]
    (folder / "_annotations.coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return folder


def _coco_annotations() -> list[dict]:
    counts = _rle_encode(_known_mask())
    return [
        {"id": 0, "image_id": 0, "category_id": 1, "segmentation": [[8, 8, 40, 8, 40, 32, 8, 32]],
         "bbox": [8, 8, 32, 24]},
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": counts}},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": {"size": [H, W], "counts": _rle_string(counts)},
         "iscrowd": 1},
        {"id": 3, "image_id": 3, "category_id": 1, "segmentation": [], "bbox": [10, 20, 30, 15]},
        {"id": 4, "image_id": 4, "category_id": 0, "bbox": [0, 0, W, H]},  # Roboflow's dataset-level category
    ]


def test_coco_polygon_rle_bbox(tmp_path):
    folder = _coco(tmp_path, _coco_annotations())
    for dataset in (open_dataset(folder), open_dataset(folder / "_annotations.coco.json")):
        assert dataset.ids == ["a", "b", "c", "d", "e"]
        assert 32 * 24 <= dataset.mask(0).sum() <= 33 * 25 and dataset.mask(0)[20, 20]
        assert np.array_equal(dataset.mask(1), _known_mask())  # uncompressed RLE
        assert np.array_equal(dataset.mask(2), _known_mask())  # compressed RLE
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
    assert valid.mask(1).sum() == _known_mask().sum() and not valid.mask(2).any()


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
    _image(folder / "e.jpg", size=(10, 10))
    with pytest.raises(LabelError, match=r"e\.jpg is 10x10 but the json says 64x48"):
        open_dataset(folder)


# ------------------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("name,photo", [
    ("00002_jpg.rf.9fb3dca8ca9d4f494861a39eb071f64e.jpg", "00002_jpg"),
    ("/data/x/IMG_1.rf.abc.png", "IMG_1"),
    ("IMG_0042.jpg", "IMG_0042"),
    (Path("a/b/wall.photo.png"), "wall.photo"),
])
def test_source_photo_id(name, photo):
    assert source_photo_id(name) == photo


def test_split_groups_keeps_groups_and_is_deterministic():
    ids = [f"p{k}" for k in range(40) for _ in range(k % 4 + 1)]  # 40 photos, 1-4 copies each (100 items)
    splits = split_groups(ids, (0.8, 0.2), seed=3)
    assert sorted(i for s in splits for i in s) == list(range(len(ids)))
    assert [{ids[i] for i in s} for s in splits][0].isdisjoint({ids[i] for i in splits[1]})
    assert abs(len(splits[1]) - 20) <= 4
    assert split_groups(ids, (0.8, 0.2), seed=3) == splits
    assert split_groups(ids, (0.8, 0.2), seed=4) != splits
    assert [len(s) for s in split_groups(ids, (1.0,))] == [100]
    with pytest.raises(ValueError, match="sum to 1"):
        split_groups(ids, (0.8, 0.1))


def test_set_split_keeps_roboflow_copies_together(tmp_path):
    labels = {f"photo{k}_jpg.rf.{copy:02d}ab": "0 0.5 0.5 0.2 0.2" for k in range(8) for copy in range(k % 3 + 1)}
    dataset = open_dataset(_yolo_split(tmp_path / "set", labels))
    train, valid = dataset.split((0.75, 0.25), seed=1)
    assert len(train) + len(valid) == len(dataset) == 15 and len(valid) > 0
    photos = [{source_photo_id(item.image_path.name) for item in part.items} for part in (train, valid)]
    assert photos[0].isdisjoint(photos[1])
    assert [s.ids for s in dataset.split((0.75, 0.25), seed=1)] == [train.ids, valid.ids]
    assert isinstance(train, LabelledSet) and train.name == dataset.name
    assert np.array_equal(train.mask(0), dataset.mask(dataset.ids.index(train.ids[0])))


def test_subset_and_index_errors(tmp_path):
    dataset = open_dataset(_yolo_split(tmp_path / "set", {"a": "", "b": "", "c": ""}))
    assert dataset.subset([2, 0]).ids == ["c", "a"]
    with pytest.raises(IndexError, match="out of range"):
        dataset.subset([3])


# ------------------------------------------------------------------------------------------------- misc


@pytest.mark.parametrize("text,parsed", [
    ('cracks="segment crack,segment wall crack"', ("cracks", ("segment crack", "segment wall crack"))),
    ("data/joints=segment taping area, segment joint/tape", ("data/joints", ("segment taping area",
                                                                             "segment joint/tape"))),
    ("data/cracks", ("data/cracks", ())),
    ("a=b=c", ("a", ("b=c",))),
])
def test_parse_data_arg(text, parsed):
    assert parse_data_arg(text) == parsed


@pytest.mark.parametrize("text", ["", "=crack", "cracks=", "cracks= , "])
def test_parse_data_arg_errors(text):
    with pytest.raises(ValueError):
        parse_data_arg(text)


def test_label_error_pickles():
    error = pickle.loads(pickle.dumps(LabelError(Path("x.txt"), "bad", 3)))
    assert str(error) == "x.txt line 3: bad" and error.line == 3


def test_zero_area_box_keeps_the_image(tmp_path):
    """Roboflow leaves 0-width boxes where a crop cut an object away: the box covers nothing, the image stays."""
    from PIL import Image as PILImage

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    PILImage.new("RGB", (40, 20)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.2 0.2 0 0.0015625\n")
    ds = open_dataset(tmp_path)
    assert len(ds) == 1
    assert ds.mask(0).sum() == 20 * 10
