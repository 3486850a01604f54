"""engine/measure.py against exact geometry: lines of known length and width (straight at 0, 30 and 45 degrees,
an arc, a branching Y; 1 to 15 px wide) measure within 3% in length and 1 px in width; scales, bands, speckle,
line-like prompts; and `python -m engine measure` on mask PNGs."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from engine.measure import (
    BRE_BANDS,
    band_for,
    is_line_prompt,
    line_prompts,
    measure_mask,
    mm_per_px_from_line,
    mm_per_px_from_width,
    summary_columns,
)
from engine.models.io import read_meta
from engine.paths import STARTER_DIR

WIDTHS = list(range(1, 16))


def _distance_to_segment(xx, yy, p0, p1, caps: bool):
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = ((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy)
    if not caps:  # a flat-ended bar: only what lies beside the segment
        d = np.abs((xx - x0) * dy - (yy - y0) * dx) / math.hypot(dx, dy)
        return np.where((t >= 0) & (t <= 1), d, np.inf)
    t = np.clip(t, 0, 1)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def _stroke(segments, width, caps=False, size=500):
    """The pixels whose centres lie within width / 2 of a polyline: an exact line of that width."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    near = np.full((size, size), np.inf)
    for p0, p1 in segments:
        near = np.minimum(near, _distance_to_segment(xx, yy, p0, p1, caps))
    return near < width / 2


def _straight(angle_deg, length, width):
    a = math.radians(angle_deg)
    offset = 0.5 if width % 2 == 0 else 0.0  # an even width centred between pixel rows
    x0, y0 = 50.0, 60.0 + offset
    return [((x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a)))]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("angle", [0, 30, 45])
def test_a_straight_line_measures_its_length_and_width(angle, width):
    m = measure_mask(_stroke(_straight(angle, 380, width), width), kind="line")
    (r,) = m.regions
    assert r.length == pytest.approx(380, rel=0.03)
    assert abs(r.max_width - width) <= 1.0 and abs(r.mean_width - width) <= 1.0
    if angle == 0:  # w rows of pixels, odd or even: both sides of the ridge counted, exactly w
        assert r.max_width == pytest.approx(width)
    assert r.branches == 1 and m.unit == "px" and r.band == "no scale"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_curved_line_measures_its_arc_length(width):
    r_, a0, a1, n = 170.0, 0.3, 2.7, 120
    points = [(250 + r_ * math.cos(a0 + (a1 - a0) * k / n), 250 + r_ * math.sin(a0 + (a1 - a0) * k / n))
              for k in range(n + 1)]
    (r,) = measure_mask(_stroke(list(zip(points[:-1], points[1:])), width, caps=True), kind="line").regions
    assert r.length == pytest.approx(r_ * (a1 - a0) + width, rel=0.03)  # round caps: tip to tip
    assert abs(r.max_width - width) <= 1.0


@pytest.mark.parametrize("width", WIDTHS)
def test_a_branching_line_counts_three_branches(width):
    arms = [((250, 250), (250, 460)), ((250, 250), (110, 110)), ((250, 250), (390, 110))]
    (r,) = measure_mask(_stroke(arms, width, caps=True), kind="line").regions
    expected = 210 + 2 * 140 * math.sqrt(2) + 3 * width / 2  # three arms, each with a round free end
    assert r.length == pytest.approx(expected, rel=0.03) and r.branches == 3
    assert abs(r.mean_width - width) <= 1.0  # the junction is wider than any arm: its maximum is not the arms'


def test_a_scale_gives_millimetres_and_a_band():
    mask = _stroke(_straight(0, 380, 5), 5)
    m = measure_mask(mask, kind="line", mm_per_px=0.5)
    (r,) = m.regions
    assert m.unit == "mm" and r.length == pytest.approx(190, rel=0.03) and r.max_width == pytest.approx(2.5, abs=0.5)
    assert r.band == "2 slight"  # BRE Digest 251: 1 to 5 mm
    assert summary_columns(m)[:4] == [1, round(r.length, 1), round(r.max_width, 2), "2 slight"]


def test_bands_follow_bre_digest_251():
    assert [band_for(w) for w in (0.05, 0.1, 0.5, 3, 10, 20, 40)] == [
        "0 negligible", "0 negligible", "1 very slight", "2 slight", "3 moderate", "4 severe", "5 very severe"]
    assert band_for(None) == "no scale" and len(BRE_BANDS) == 6


def test_scales_from_a_width_or_a_drawn_line():
    assert mm_per_px_from_width(1200, 4000) == pytest.approx(0.3)
    assert mm_per_px_from_line((10, 10), (310, 410), 1000) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="two different points"):
        mm_per_px_from_line((5, 5), (5, 5), 100)
    with pytest.raises(ValueError, match="must be positive"):
        mm_per_px_from_width(0, 100)


def test_speckle_is_dropped_and_counted_and_areas_measured():
    mask = np.zeros((200, 300), bool)
    mask[20:80, 30:230] = True  # a taped band 200 x 60
    mask[150:153, 150:153] = True  # 9 px of speckle
    m = measure_mask(mask, kind="area", min_area=20, mm_per_px=2.0)
    assert m.count == 1 and m.dropped == 1
    (r,) = m.regions
    assert r.area == pytest.approx(200 * 60 * 4.0) and r.long_side == pytest.approx(math.hypot(200, 60) * 2, rel=0.02)
    assert summary_columns(m) == [1, "", "", "", round(200 * 60 * 4.0, 1), "mm²"]
    assert measure_mask(np.zeros((10, 10), bool)).count == 0


def test_line_prompts_come_from_the_model_or_the_words(tmp_path):
    assert is_line_prompt("segment crack") and is_line_prompt("segment wall crack")
    assert is_line_prompt("Hairline fracture") and is_line_prompt("segment fissure")
    assert not is_line_prompt("segment taping area") and not is_line_prompt("segment drywall seam")
    meta = {"line_prompts": ["segment seam"]}
    assert is_line_prompt("segment seam", meta) and not is_line_prompt("segment crack", meta)
    # as a model folder says it: drywall_qa.json, read as the loaders read it; the bundled model lists none
    (tmp_path / "drywall_qa.json").write_text(json.dumps({"threshold": 0.5, "line_prompts": ["segment seam"]}))
    assert line_prompts(read_meta(tmp_path)) == ["segment seam"]
    assert is_line_prompt("segment seam", read_meta(tmp_path))
    bundled = read_meta(STARTER_DIR / "best")
    assert line_prompts(bundled) is None and is_line_prompt("segment crack", bundled)


def test_the_measure_command_writes_a_row_per_region(tmp_path, capsys):
    from engine.cli import main

    masks = tmp_path / "masks"
    masks.mkdir()
    two = _stroke(_straight(0, 300, 3), 3) | _stroke([((50, 300), (350, 300))], 7)
    Image.fromarray((two * 255).astype(np.uint8)).save(masks / "wall__segment_crack.png")
    band = np.zeros((500, 500), np.uint8)
    band[100:160, 50:450] = 255
    Image.fromarray(band).save(masks / "wall__segment_taping_area.png")
    out = tmp_path / "measures.csv"
    assert main(["measure", "--masks", str(masks), "--mm-per-px", "0.5", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    cracks = [r for r in rows if r["mask"] == "wall__segment_crack.png"]
    assert [r["kind"] for r in cracks] == ["line", "line"] and {r["unit"] for r in rows} == {"mm"}
    assert sorted(round(float(r["max_width"])) for r in cracks) == [2, 4]  # 3 px and 7 px at 0.5 mm a pixel
    (taping,) = [r for r in rows if r["mask"] == "wall__segment_taping_area.png"]
    assert taping["kind"] == "area" and float(taping["area"]) == pytest.approx(400 * 60 * 0.25)
    assert "3 regions in 2 masks" in capsys.readouterr().out


def test_the_measure_command_takes_the_kind_for_masks_without_a_prompt_in_their_name(tmp_path, capsys):
    from engine.cli import main

    Image.fromarray((_stroke(_straight(0, 300, 5), 5) * 255).astype(np.uint8)).save(tmp_path / "scan.png")
    for kind, expected in (("crack", "line"), ("area", "area"), ("auto", "line")):
        out = tmp_path / f"{kind}.csv"
        assert main(["measure", "--masks", str(tmp_path / "scan.png"), "--prompt-kind", kind, "--out", str(out)]) == 0
        (row,) = csv.DictReader(out.open())
        assert row["kind"] == expected and row["unit"] == "px"
    assert float(row["length"]) == pytest.approx(300, rel=0.03) and float(row["max_width"]) == 5.0
    assert row["band"] == "no scale"
