"""engine.data.yolo: YOLO label files (polygons, boxes), their errors, skip_bad."""

from __future__ import annotations

import warnings

import pytest

from engine.data import LabelError, LabelWarning, open_dataset
from tests.data_helpers import H, W, yolo_split


def test_yolo_box_polygon_union_and_empty(tmp_path):
    folder = yolo_split(tmp_path / "set", {
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
    folder = yolo_split(tmp_path / "set", {"a": "0 -0.02 -0.03 1.04 -0.01 1.03 1.02 0.0 1.0"})
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
    folder = yolo_split(tmp_path / "set", {"ok": "0 0.5 0.5 0.2 0.2", "bad": text})
    with pytest.raises(LabelError) as info:
        open_dataset(folder)
    label = folder / "labels" / "bad.txt"
    assert str(info.value).startswith(f"{label} line {line}: ") and reason in str(info.value)
    assert info.value.path == label and info.value.line == line


def test_missing_label_raises_or_is_skipped(tmp_path):
    folder = yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2", "b": None, "c": ""})
    with pytest.raises(LabelError, match=r"b\.png: no label file .*b\.txt; add an empty \.txt"):
        open_dataset(folder)
    with pytest.warns(LabelWarning, match=r"skipped: .*b\.png: no label file"):
        dataset = open_dataset(folder, skip_bad=True)
    assert dataset.ids == ["a", "c"]


def test_skip_bad_drops_bad_label_files(tmp_path):
    folder = yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2", "b": "0 0.1 0.2 0.3\n", "c": "0 9 9 9 9"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset(folder, skip_bad=True)
    assert dataset.ids == ["a"]
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, LabelWarning))
    assert len(messages) == 2
    assert "b.txt line 1: odd number" in messages[0] and "c.txt line 1: coordinate 13.5 is far outside" in messages[1]


def test_label_without_image_warns_and_is_ignored(tmp_path):
    folder = yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2"})
    (folder / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2")
    with pytest.warns(LabelWarning, match=r"1 label file\(s\) without an image .*ghost\.txt"):
        assert open_dataset(folder).ids == ["a"]


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


def test_images_or_labels_linking_outside_are_refused(tmp_path):
    folder = yolo_split(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2"})
    outside = yolo_split(tmp_path / "elsewhere", {"x": "0 0.5 0.5 0.2 0.2"})
    (folder / "images" / "b.png").symlink_to(outside / "images" / "x.png")
    with pytest.raises(LabelError, match=r"set/images/b\.png: is a link to a file outside the data set's folder"):
        open_dataset(folder, skip_bad=True)
    (folder / "images" / "b.png").unlink()
    (folder / "labels" / "b.txt").symlink_to(outside / "labels" / "x.txt")
    with pytest.raises(LabelError, match=r"set/labels/b\.txt: is a link to a file outside"):
        open_dataset(folder)
