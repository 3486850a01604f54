"""engine/report.py: the self-contained HTML report of a batch (rows, totals, found flags, embedded images)."""

import base64
import io
import re

from PIL import Image

from engine.prediction import CSV_HEADER
from engine.report import ReportPhoto, render_report, report_photo, thumbnail_uri, totals, write_report


def _row(photo, prompt, found, area):
    values = dict(photo=photo, prompt=prompt, found="found" if found else "not found", area_percent=area,
                  presence=0.5, max_score=0.9, threshold=0.5, presence_threshold=0.5, ms=12.0,
                  count=2 if found else 0, length=431.2 if "crack" in prompt else "",
                  max_width=5.12 if "crack" in prompt else "", band="no scale" if "crack" in prompt else "",
                  area="" if "crack" in prompt else 2300.0, unit="px" if "crack" in prompt else "px²")
    return [values[c] for c in CSV_HEADER]


def _entries():
    uri = thumbnail_uri(Image.new("RGB", (40, 30), (200, 100, 50)))
    return [ReportPhoto(f"p{i}.jpg", [_row(f"p{i}.jpg", "segment crack", i < 2, 2.0 * i),
                                      _row(f"p{i}.jpg", "segment taping area", i == 0, 1.0)],
                        {"segment crack": uri, "segment taping area": uri}) for i in range(3)]


def test_thumbnail_uri_is_a_decodable_jpeg():
    uri = thumbnail_uri(Image.new("RGB", (40, 30), (10, 200, 30)))
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "JPEG" and image.size == (40, 30)


def test_totals_count_photos_found_and_areas():
    got = {t.prompt: t for t in totals(_entries())}
    crack = got["segment crack"]
    assert (crack.photos, crack.found, crack.mean_area, crack.max_area) == (3, 2, 2.0, 4.0)
    assert (got["segment taping area"].found, got["segment taping area"].mean_area) == (1, 1.0)


def test_the_report_has_a_row_per_photo_totals_and_flags_and_no_external_url(tmp_path):
    path = write_report(_entries(), tmp_path / "r.html", model="tiny", threshold="0.50")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "model tiny" in text and "threshold 0.50" in text
    assert "3 photos · 2 prompts" in text
    assert text.count('<tr class="photo">') == 3
    assert text.count("data:image/jpeg;base64,") == 6
    assert not re.search(r"https?://", text) and "<script" not in text and "<link" not in text
    totals_table = text.split('<table id="totals">')[1].split("</table>")[0]
    assert re.search(r"segment crack</td><td class=num>3</td><td class=num>2</td><td class=num>67</td>"
                     r"<td class=num>2.00</td><td class=num>4.00</td>", totals_table)
    photos_table = text.split('<table id="photos">')[1]
    assert photos_table.count('class="found">found') == 3 and photos_table.count("not found") == 3


def test_totals_and_captions_carry_the_measurements(tmp_path):
    got = {t.prompt: t for t in totals(_entries())}
    crack, taping = got["segment crack"], got["segment taping area"]
    assert (crack.regions, crack.widest, crack.band, crack.area, crack.unit) == (4, 5.12, "no scale", None, "px")
    assert crack.length == 3 * 431.2
    assert (taping.regions, taping.length, taping.area, taping.unit) == (2, None, 3 * 2300.0, "px²")
    text = write_report(_entries(), tmp_path / "r.html").read_text()
    totals_table = text.split('<table id="totals">')[1].split("</table>")[0]
    assert "<th>total length</th><th>widest</th><th>band</th><th>total area</th>" in totals_table
    assert re.search(r"<td class=num>4</td><td class=num>1,294</td><td class=num>5.1</td><td>no scale</td>"
                     r"<td class=num></td><td>px</td>", totals_table)
    assert re.search(r"<td class=num>2</td><td class=num></td><td class=num></td><td></td>"
                     r"<td class=num>6,900</td><td>px²</td>", totals_table)
    assert "2 cracks, 431 px long, widest 5.1 px" in text and "2 regions, 2,300 px²" in text


def test_mixed_units_are_not_summed():
    entries = _entries()
    entries[0].rows[0][CSV_HEADER.index("unit")] = "mm"
    crack = {t.prompt: t for t in totals(entries)}["segment crack"]
    assert (crack.regions, crack.length, crack.unit) == (None, None, "")


def test_names_are_escaped():
    entry = ReportPhoto("<b>x</b>.jpg", [_row("<b>x</b>.jpg", "segment <crack>", True, 1.0)])
    text = render_report([entry])
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;.jpg" in text and "segment &lt;crack&gt;" in text


def test_report_photo_draws_one_thumbnail_per_prompt(tiny_segmenter, shared_data):
    photo = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[0]
    pred = tiny_segmenter.prediction(photo, ["segment crack", "segment taping area"], threshold=0.0)
    entry = report_photo(pred, photo, photo.name, [], side=64)
    assert list(entry.thumbnails) == ["segment crack", "segment taping area"]
    first = entry.thumbnails["segment crack"]
    with Image.open(io.BytesIO(base64.b64decode(first.split(",", 1)[1]))) as image:
        assert max(image.size) == 64
    assert entry.thumbnails["segment crack"] != entry.thumbnails["segment taping area"]


def test_one_photo_and_one_prompt_are_counted_in_the_singular(tmp_path):
    one = [e for e in _entries()[:1]]
    for entry in one:
        entry.rows[:] = [r for r in entry.rows if r[1] == "segment crack"]
    text = write_report(one, tmp_path / "one.html", model="tiny", threshold="0.50").read_text()
    assert "1 photo · 1 prompt ·" in text
