"""engine/app/batch.py and app.py's /segment_batch: several photos or a zip of photos -> masks zip, CSV, report."""

import csv
import zipfile
from pathlib import Path

import pytest

import app
from engine.app.batch import batch_photos, segment_batch
from engine.app.public import Limits, PublicSettings
from engine.errors import ArchiveError
from engine.prediction import CSV_HEADER

PROMPTS = ["segment crack", "segment taping area"]


@pytest.fixture(scope="module")
def photos(shared_data):
    return sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[:4]


def _zip(path, files, names=None):
    with zipfile.ZipFile(path, "w") as archive:
        for i, f in enumerate(files):
            archive.write(f, names[i] if names else f"site-visit/{f.name}")
        archive.writestr("site-visit/notes.txt", "not a photo")
    return path


def test_batch_photos_from_uploads_and_a_zip_with_unique_ids(photos, tmp_path):
    z = _zip(tmp_path / "visit.zip", photos[:2], ["a/wall.jpg", "b/wall.jpg"])
    got = batch_photos([(photos[2], photos[2].name), (z, "visit.zip")], tmp_path / "work")
    assert [p.name for p in got] == [photos[2].name, "a/wall.jpg", "b/wall.jpg"]
    assert [p.image_id for p in got][1:] == ["wall", "wall_2"]
    assert all(p.path.is_file() for p in got)


def test_batch_photos_caps_and_refuses_unsafe_zips(photos, tmp_path):
    with pytest.raises(ValueError, match="at most 3 per batch here"):
        batch_photos([(p, p.name) for p in photos], tmp_path / "w1", max_photos=3)
    with pytest.raises(ValueError, match="No photos yet"):
        batch_photos([], tmp_path / "w2")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.jpg", b"x")
    with pytest.raises(ArchiveError, match="climbs out of the folder"):
        batch_photos([(evil, "evil.zip")], tmp_path / "w3")
    assert not (tmp_path / "escape.jpg").exists()


def test_segment_batch_writes_masks_csv_and_report(tiny_segmenter, photos, tmp_path):
    items = batch_photos([(p, p.name) for p in photos[:3]], tmp_path / "in")
    seen = []
    result = segment_batch(tiny_segmenter, items, PROMPTS, out_dir=tmp_path / "out", threshold=0.5,
                           progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 4
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(f"{p.stem}__{s}.png" for p in photos[:3]
                                                    for s in ("segment_crack", "segment_taping_area"))
    with result.csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_HEADER and len(rows) == 7 and rows[1][:2] == [photos[0].name, PROMPTS[0]]
    text = result.report_path.read_text()
    assert text.count('<tr class="photo">') == 3 and "threshold 0.50" in text


def test_a_photo_that_cannot_be_read_is_listed_and_skipped(tiny_segmenter, photos, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not a photo" * 10)
    items = batch_photos([(photos[0], photos[0].name), (bad, "notes.jpg")], tmp_path / "in")
    result = segment_batch(tiny_segmenter, items, PROMPTS[:1], out_dir=tmp_path / "out")
    assert result.n_photos == 1 and list(result.failed) == ["notes.jpg"]
    assert str(tmp_path) not in result.failed["notes.jpg"]


@pytest.mark.slow
def test_the_handler_on_a_zip_of_real_photos_and_the_public_cap(photos, tmp_path, shared_data, tiny_model_dir):
    ctx = app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                           data_root=shared_data, work_dir=tmp_path / "work", default_model=str(tiny_model_dir))
    z = _zip(tmp_path / "visit.zip", photos)
    masks, table, report, review = app.segment_batch(ctx, [str(z)], "segment crack\nsegment taping area", "", 0.5)
    assert masks.startswith(str(ctx.work_dir / "masks"))
    margins = [row[5] for row in review["rows"]]  # "worth correcting": every answer, the least certain first
    assert len(margins) == 8 and margins == sorted(margins)
    assert len(review["photos"]) == 4 and all(Path(p).is_file() for p in review["photos"].values())
    shown, photos = app.show_suggested(review)
    assert shown["data"][0][:2] == review["rows"][0][:2] and photos == review["photos"]
    with zipfile.ZipFile(masks) as archive:
        assert len(archive.namelist()) == 8
    assert len(list(csv.reader(open(table)))) == 9
    assert open(report).read().count('<tr class="photo">') == 4

    public = app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                              data_root=shared_data, work_dir=tmp_path / "work2", default_model=str(tiny_model_dir),
                              public=PublicSettings(enabled=True, limits=Limits(batch_photos=3),
                                                    extra_models=(str(tiny_model_dir),)))
    with pytest.raises(app.gr.Error, match="at most 3 per batch") as info:
        app.segment_batch(public, [str(z)], "segment crack", str(tiny_model_dir), 0.5)
    assert str(tmp_path) not in str(info.value)
