"""engine/app/segment.py: one photo into overlay, heatmap, legend, table and named mask files."""

import json

import numpy as np
import pytest
from PIL import Image

from engine.app.segment import DISPLAY_MAX_SIDE, example_rows, image_id_for, resize_map, segment_photo


def test_image_id_for_upload_names():
    assert image_id_for("/tmp/gradio/abc/IMG 0042.jpg") == "IMG_0042"
    assert image_id_for(None) == "photo"
    assert image_id_for("../..jpg") == "photo"


def test_segment_photo_writes_named_masks_at_full_size(tiny_segmenter, shared_data, tmp_path):
    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    result = segment_photo(tiny_segmenter, str(photo), ["segment crack", "segment taping area"],
                           threshold=0.0, image_id=photo.stem, out_dir=tmp_path)
    names = [p.name for p in result.mask_paths]
    assert names == [f"{photo.stem}__segment_crack.png", f"{photo.stem}__segment_taping_area.png"]
    with Image.open(photo) as im, Image.open(result.mask_paths[0]) as mask:
        assert mask.size == im.size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) == {255}  # threshold 0: everything is covered
    assert [r[0] for r in result.rows] == ["segment crack", "segment taping area"]
    assert result.rows[0][1] == 100.0 and 0 < result.rows[0][2] <= 1
    assert result.overlay.size == result.photo.size and [c for _, c in result.legend][0] == "#d55e00"
    assert result.heatmap.height > result.photo.height * 0.5  # two labelled panels side by side
    assert max(result.photo.size) <= DISPLAY_MAX_SIDE and result.threshold == 0.0


def test_segment_photo_refuses_a_threshold_off_the_slider(tiny_segmenter, tmp_path):
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        segment_photo(tiny_segmenter, np.zeros((8, 8, 3), np.uint8), ["segment crack"], threshold=1.5,
                      out_dir=tmp_path)


def test_resize_map_is_bilinear_at_pil_size():
    prob = np.array([[0.0, 1.0]], dtype=np.float32)
    out = resize_map(prob, (4, 3))
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[0, 0] < out[0, -1] and 0.0 <= out.min() and out.max() <= 1.0
    assert resize_map(prob, (2, 1)) is prob


def test_example_rows_read_prompts_json(tmp_path):
    for name in ("b.jpg", "a.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "prompts.json").write_text(json.dumps({"a.jpg": ["segment crack", "segment taping area"]}))
    assert example_rows(tmp_path, ["segment crack"]) == [
        [str(tmp_path / "a.jpg"), "segment crack\nsegment taping area"], [str(tmp_path / "b.jpg"), "segment crack"]]
