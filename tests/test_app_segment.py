"""engine/app/segment.py: one photo into overlay, heatmap, legend, table and named mask files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.app.segment import (
    DISPLAY_MAX_SIDE,
    TABLE_HEADERS,
    example_rows,
    image_id_for,
    line_scale,
    region_tags,
    resize_map,
    segment_photo,
    slider_threshold,
)
from engine.draw import overlay

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    assert result.rows[0][1] == "found" and result.rows[0][2] == 100.0 and 0 < result.rows[0][4] <= 1
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


def test_the_slider_at_the_model_default_means_each_prompts_own_threshold(tiny_segmenter):
    assert tiny_segmenter.threshold == 0.5
    assert slider_threshold(tiny_segmenter, 0.5) is None and slider_threshold(tiny_segmenter, None) is None
    assert slider_threshold(tiny_segmenter, 0.3) == 0.3


def test_a_prompt_not_found_is_said_and_its_mask_is_empty(tiny_segmenter, tmp_path):
    photo = np.full((30, 40, 3), 90, np.uint8)
    result = segment_photo(tiny_segmenter, photo, ["segment crack"], threshold=1.0, out_dir=tmp_path)
    assert result.rows[0][:3] == ["segment crack", f"not found: presence {result.rows[0][3]:.2f} < 1.00", 0.0]
    with Image.open(result.mask_paths[0]) as mask:
        assert mask.size == (40, 30) and not np.asarray(mask).any()
    assert result.warning is None  # the tiny model lists no prompts: no warning


# A huge photo with 8 prompts, in a child process: the peak RSS (VmHWM, reset once the model is loaded and warm)
# minus the idle RSS. Each kind is the size a visitor can send in under 1 MB: an 8-bit PNG of 12240 px, and a
# 12000 px float32 TIFF and 16-bit PNG, whose decoding needs 4 and 2 bytes a pixel (docs/speed.md "Memory" has the
# figures: `pytest -m slow -s tests/test_app_segment.py -k above_idle`).
MEMORY_CHILD = """
import sys
import numpy as np
import torch
from PIL import Image, ImageDraw
from engine.app.segment import segment_photo
from engine.models import load_segmenter

torch.set_num_threads(2)
model, photo, out, kind = sys.argv[1:5]
Image.MAX_IMAGE_PIXELS = None
side = 12240 if kind == "png8" else 12000
big = Image.new("L", (side, side), 200)
draw = ImageDraw.Draw(big)
for i in range(0, side, 1500):
    draw.line([(i, 0), (side - i, side)], fill=40, width=30)
if kind == "png8":
    big.convert("RGB").save(photo)
elif kind == "float32_tiff":
    Image.fromarray(np.asarray(big, np.float32) / 255.0, "F").save(photo, compression="tiff_deflate")
else:  # 16-bit grayscale PNG
    Image.fromarray(np.asarray(big, np.uint16) * 257).save(photo)
del big, draw
seg = load_segmenter(model, threads=2)
prompts = [f"segment thing {i}" for i in range(8)]
segment_photo(seg, np.zeros((64, 64, 3), np.uint8), prompts, out_dir=out)  # warm: lazy imports and caches

def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

idle = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := the current RSS
result = segment_photo(seg, photo, prompts, image_id="big", out_dir=out)
print(len(result.mask_paths), status("VmHWM") - idle)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind, suffix, side", [("png8", ".png", 12240), ("float32_tiff", ".tif", 12000),
                                                ("png16", ".png", 12000)])
def test_a_huge_photo_with_8_prompts_stays_under_1_5_gb_above_idle(tiny_model_dir, tmp_path, kind, suffix, side):
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tiny_model_dir), str(tmp_path / f"big{suffix}"),
                           str(tmp_path / "masks"), kind], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    n_masks, above_idle = map(int, done.stdout.split()[-2:])
    print(f"\n{kind} {side} px, 8 prompts: {above_idle / 1e9:.2f} GB above idle "
          f"({(tmp_path / f'big{suffix}').stat().st_size / 1e6:.2f} MB file)")
    assert n_masks == 8
    with Image.open(tmp_path / "masks" / "big__segment_thing_0.png") as mask:
        assert mask.size == (side, side)
    assert above_idle <= 1.5e9, f"{above_idle / 1e9:.2f} GB above idle"


def test_segment_photo_measures_each_prompt_with_a_scale_and_numbers_its_regions(tiny_segmenter, tmp_path):
    """Threshold 0: every pixel is in the mask, one region the size of the photo. With the photo's real width the
    figures are in mm; the crack prompt is a line (length, widest, band), taping an area."""
    photo = tmp_path / "wall.png"
    Image.new("RGB", (200, 100), (180, 180, 180)).save(photo)
    result = segment_photo(tiny_segmenter, photo, ["segment crack", "segment taping area"], threshold=0.0,
                           out_dir=tmp_path / "masks", photo_width_mm=400)
    crack, taping = (dict(zip(TABLE_HEADERS, row)) for row in result.rows)
    assert result.mm_per_px == pytest.approx(2.0) and crack["unit"] == "mm" and taping["unit"] == "mm²"
    assert crack["count"] == 1 and crack["area"] == "" and crack["band"].startswith("5 very severe")
    assert taping["count"] == 1 and taping["area"] == pytest.approx(200 * 100 * 4.0) and taping["total length"] == ""
    assert [r.index for r in result.measures["segment crack"].regions] == [1]
    tags = region_tags(result.measures, (200, 100), result.photo.size)
    assert [(round(x), round(y), text, colour) for x, y, text, colour in tags] == [(100, 50, "1", 0), (100, 50, "1", 1)]
    full = np.ones((100, 200), bool)
    plain = np.asarray(overlay(result.photo, {"segment crack": full, "segment taping area": full}))
    tagged = np.asarray(result.overlay)
    assert (tagged[40:60, 85:115] != plain[40:60, 85:115]).any() and (tagged[:20] == plain[:20]).all()


def test_a_clicked_line_of_known_length_sets_the_scale(tiny_segmenter, tmp_path):
    """Two clicks on the overlay (shown at half the photo's size here) 150 px apart = 300 photo px; 600 mm long:
    2 mm per photo pixel, set in the scale box for the next Segment."""
    import gradio as gr

    import app

    photo = tmp_path / "wide.png"
    Image.new("RGB", (2 * DISPLAY_MAX_SIDE, 400), (180, 180, 180)).save(photo)
    result = segment_photo(tiny_segmenter, photo, ["segment crack"], out_dir=tmp_path / "masks")
    assert result.size == (2 * DISPLAY_MAX_SIDE, 400) and result.overlay.size == (DISPLAY_MAX_SIDE, 200)
    assert line_scale([(10, 20), (10 + 90, 20 + 120)], 600, result.overlay.size, result.size) == pytest.approx(2.0)
    points = []
    for xy in ([5, 5], [10, 20], [100, 140]):  # three clicks: the last two count
        points, note = app.pick_point(points, gr.SelectData(None, {"index": xy, "value": None}))
    assert points == [[10.0, 20.0], [100.0, 140.0]] and "Use this line" in note
    mm, width, note = app.use_line_scale(points, 600, result)
    assert mm == pytest.approx(2.0) and width == 0 and "2 mm per pixel" in note
    with pytest.raises(gr.Error, match="1 of 2 clicked"):
        app.use_line_scale(points[:1], 600, result)
