"""Label sets: saving corrected masks, absent marks, caps, deleting, and the zip / COCO / YOLO writers."""

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.data import open_dataset
from engine.data.labelset import (
    MANIFEST,
    check_set_name,
    delete_label,
    label_set_splits,
    list_sets,
    read_mask,
    save_label,
)
from engine.data.rle import decode_rle
from engine.data.writers import mask_polygons, rle_counts, write_coco, write_yolo, zip_label_set
from engine.synth import make_wall


@pytest.fixture()
def photos(tmp_path):
    """Two generated walls (JPEG) and their crack masks."""
    out = []
    for seed in (1, 2):
        image, masks = make_wall(seed, (96, 64), cracks=1, joints=1)
        path = tmp_path / f"wall {seed}.jpg"
        image.save(path, quality=92)
        out.append((path, masks["crack"], masks["taping area"]))
    return out


def test_a_saved_mask_opens_pixel_for_pixel_and_an_absent_mark_is_an_empty_mask(tmp_path, photos):
    sets = tmp_path / "sets"
    (p1, crack1, tape1), (p2, _, _) = photos
    save_label(sets, "my-walls", p1, "segment crack", crack1, model="bundled")
    save_label(sets, "my-walls", p1, "segment taping area", tape1)
    summary = save_label(sets, "my-walls", p2, "segment crack", None)  # not in this photo
    assert summary.photos == 2
    assert summary.prompts == {"segment crack": (2, 1), "segment taping area": (1, 0)}
    assert "1 absent" in summary.text()
    splits = dict((prompt, folder) for folder, prompt in label_set_splits(sets / "my-walls"))
    cracks = open_dataset(splits["segment crack"], prompts=["segment crack"])
    by_id = {cracks.items[i].image_id: cracks[i] for i in range(len(cracks))}
    assert len(by_id) == 2
    first = next(v for k, v in by_id.items() if k.startswith("wall-1"))
    second = next(v for k, v in by_id.items() if k.startswith("wall-2"))
    assert np.array_equal(first[1], crack1)
    assert first[0].size == (96, 64)
    assert not second[1].any()
    tapes = open_dataset(splits["segment taping area"])
    assert np.array_equal(tapes[0][1], tape1)


def test_saving_the_same_photo_again_replaces_its_mask(tmp_path, photos):
    sets = tmp_path / "sets"
    path, crack, _ = photos[0]
    save_label(sets, "s", path, "segment crack", crack)
    summary = save_label(sets, "s", path, "Segment  crack", np.zeros_like(crack))  # same prompt folder
    assert summary.photos == 1 and summary.prompts == {"segment crack": (1, 1)}
    ds = open_dataset(sets / "s" / "segment_crack")
    assert len(ds) == 1 and not ds[0][1].any()


def test_caps_refuse_before_anything_is_written(tmp_path, photos):
    sets = tmp_path / "sets"
    (p1, c1, _), (p2, c2, _) = photos
    save_label(sets, "a", p1, "segment crack", c1, max_photos=1)
    before = sorted(p.name for p in (sets / "a").rglob("*"))
    with pytest.raises(ValueError, match="DQA_MAX_SET_PHOTOS"):
        save_label(sets, "a", p2, "segment crack", c2, max_photos=1)
    save_label(sets, "a", p1, "segment taping area", c1, max_photos=1)  # a photo already in the set: allowed
    with pytest.raises(ValueError, match="DQA_MAX_SETS"):
        save_label(sets, "b", p2, "segment crack", c2, max_sets=1)
    assert not (sets / "b").exists()
    assert set(before) <= {p.name for p in (sets / "a").rglob("*")}


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "naïve"])
def test_set_names_are_plain_folder_names(name):
    with pytest.raises(ValueError, match="Set name"):
        check_set_name(name)


def test_a_mask_of_another_shape_is_refused_and_a_smaller_copy_is_scaled(tmp_path, photos):
    path, crack, _ = photos[0]
    with pytest.raises(ValueError, match="96x64"):
        read_mask(np.ones((50, 50), bool), (96, 64))
    half = np.zeros((32, 48), bool)
    half[:16] = True
    full = read_mask(half, (96, 64))
    assert full.shape == (64, 96) and full[:32].all() and not full[32:].any()
    layer = np.zeros((64, 96, 4), np.uint8)  # an editor layer: transparent except where painted
    layer[10:20, 5:9] = (255, 80, 0, 255)
    png = tmp_path / "layer.png"
    Image.fromarray(layer, "RGBA").save(png)
    painted = read_mask(png, (96, 64))
    assert painted.sum() == 40 and painted[10:20, 5:9].all()
    Image.new("L", (960, 640)).save(tmp_path / "huge.png")
    with pytest.raises(ValueError, match="larger than the photo"):  # refused from its header
        read_mask(tmp_path / "huge.png", (96, 64))


def test_deleting_items_and_the_last_one_deletes_the_set(tmp_path, photos):
    sets = tmp_path / "sets"
    (p1, c1, t1), (p2, c2, _) = photos
    save_label(sets, "s", p1, "segment crack", c1)
    save_label(sets, "s", p1, "segment taping area", t1)
    summary = save_label(sets, "s", p2, "segment crack", c2)
    photo = summary.entries[0].photo
    summary = delete_label(sets, "s", photo, "segment taping area")
    assert summary.prompts == {"segment crack": (2, 0)}
    assert not (sets / "s" / "segment_taping_area").exists()
    with pytest.raises(ValueError, match="no photo"):
        delete_label(sets, "s", "nope.jpg")
    for entry in list(summary.entries):
        summary = delete_label(sets, "s", entry.photo)
    assert summary.photos == 0 and not (sets / "s").exists() and list_sets(sets) == []


def test_the_zip_opens_again_after_extraction(tmp_path, photos):
    sets = tmp_path / "sets"
    (p1, c1, _), (p2, _, _) = photos
    save_label(sets, "s", p1, "segment crack", c1)
    save_label(sets, "s", p2, "segment crack", None)
    target = zip_label_set(sets / "s", tmp_path)
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "out")
    assert f"s/{MANIFEST}" in names and len(names) == 5
    ds = open_dataset(tmp_path / "out" / "s" / "segment_crack")
    assert sorted(int(ds.mask(i).sum()) for i in range(2)) == [0, int(c1.sum())]


def test_rle_round_trips_exactly_and_polygons_cover_the_regions():
    rng = np.random.default_rng(0)
    mask = rng.random((23, 31)) > 0.7
    assert np.array_equal(decode_rle(rle_counts(mask), mask.shape), mask)
    assert rle_counts(np.ones((2, 2), bool)) == [0, 4]
    blob = np.zeros((40, 40), bool)
    blob[5:25, 10:30] = True
    blob[30, 35] = True  # a lone pixel: its box
    rings = mask_polygons(blob)
    assert len(rings) == 2
    xs, ys = rings[0][:, 0], rings[0][:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 30, 5, 25)


def test_coco_and_yolo_exports_open_with_every_prompt(tmp_path, photos):
    sets = tmp_path / "sets"
    (p1, c1, t1), (p2, c2, _) = photos
    save_label(sets, "s", p1, "segment crack", c1)
    save_label(sets, "s", p1, "segment taping area", t1)
    save_label(sets, "s", p2, "segment crack", c2)
    for target in (write_coco(sets / "s", tmp_path), write_coco(sets / "s", tmp_path, polygons=True),
                   write_yolo(sets / "s", tmp_path)):
        out = tmp_path / target.stem
        with zipfile.ZipFile(target) as archive:
            archive.extractall(out)
        root = out / "s"
        if (root / "data.yaml").exists():
            ds = open_dataset(root, split="train", categories=["segment taping area"])
        else:
            ds = open_dataset(root / "_annotations.coco.json", categories=["segment taping area"])
            coco = json.loads((root / "_annotations.coco.json").read_text())
            assert [c["name"] for c in coco["categories"]] == ["segment crack", "segment taping area"]
        masks = {ds.items[i].image_path.name: ds.mask(i) for i in range(len(ds))}
        shown = next(m for name, m in masks.items() if name.startswith("wall-1"))
        iou = (shown & t1).sum() / (shown | t1).sum()
        assert iou == 1.0 if "polygons" not in target.name and "yolo" not in target.name else iou > 0.9, target.name
