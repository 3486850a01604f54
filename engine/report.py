"""The HTML report of a batch of photos: one row per photo, an overlay thumbnail per prompt, totals per prompt
(detection, and the measurements: regions, total crack length, widest crack and its band, total area).

The page is one self-contained file that opens offline: the thumbnails are embedded as base64 JPEG data URIs
(THUMB_SIDE px on the long side, so 20 photos x 2 prompts stay well under 1 MB), the style is inline, and
nothing is fetched from anywhere. Its numbers are the CSV's (`engine.prediction.CSV_HEADER` rows, written by
`write_prediction`), so the report and predictions.csv never disagree. Used by `python -m engine predict
--report` and the app's /segment_batch. Pure: no gradio, no torch.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.draw import colour_for, overlay
from engine.fileio import atomic_write_text
from engine.images import load_image
from engine.prediction import CSV_HEADER, Prediction

__all__ = ["THUMB_SIDE", "ReportPhoto", "PromptTotal", "report_photo", "thumbnail_uri", "totals", "render_report",
           "write_report"]

THUMB_SIDE = 240  # long side (px) of each overlay thumbnail
JPEG_QUALITY = 80
_COL = {name: i for i, name in enumerate(CSV_HEADER)}


@dataclass
class ReportPhoto:
    """One photo's row: its name, its CSV rows (CSV_HEADER, one per prompt) and {prompt: thumbnail data URI}."""

    photo: str
    rows: list[list]
    thumbnails: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptTotal:
    """A prompt over the batch: photos run, photos where it was found, mean and max area (% of the photo), and the
    measurements summed over the photos (`engine.measure.summary_columns`, in `unit`): regions; for a crack-like
    prompt the total length and the widest crack with its band; for an area-like one the total area. None where
    a figure does not apply, or where the photos' units differ (no sum of mm and px)."""

    prompt: str
    photos: int
    found: int
    mean_area: float
    max_area: float
    regions: int | None = None
    length: float | None = None
    widest: float | None = None
    band: str = ""
    area: float | None = None
    unit: str = ""


def _count(n: int, noun: str) -> str:
    """"1 prompt", "2 prompts"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def thumbnail_uri(image, fmt: str = "JPEG") -> str:
    """A PIL image as a `data:image/jpeg;base64,...` (or png) URI."""
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    image.save(buffer, format=fmt, **options)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def report_photo(pred: Prediction, image, photo: str, rows: list[list], side: int = THUMB_SIDE) -> ReportPhoto:
    """A report row for one photo: one overlay thumbnail per prompt, each prompt in its overlay colour.

    image: what the prediction was made from (a path, decoded again here at thumbnail size with the bounded
    `load_image(max_side=...)`); rows: its CSV rows from `write_prediction`.
    """
    thumb = load_image(image, max_side=side)
    empty = np.zeros(thumb.size[::-1], dtype=bool)
    uris = {}
    for p in pred.prompts:  # all prompts in the dict, only p drawn: p keeps its palette colour
        masks = {q: (pred.mask(q, thumb.size) if q == p else empty) for q in pred.prompts}
        uris[p] = thumbnail_uri(overlay(thumb, masks))
    return ReportPhoto(photo=photo, rows=rows, thumbnails=uris)


def totals(photos: Sequence[ReportPhoto]) -> list[PromptTotal]:
    """Per prompt (in first-seen order): photos run, photos found, mean and max area %."""
    by_prompt: dict[str, list[list]] = {}
    for entry in photos:
        for row in entry.rows:
            by_prompt.setdefault(row[_COL["prompt"]], []).append(row)
    out = []
    for prompt, rows in by_prompt.items():
        areas = [float(r[_COL["area_percent"]]) for r in rows]
        out.append(PromptTotal(prompt=prompt, photos=len(rows),
                               found=sum(r[_COL["found"]] == "found" for r in rows),
                               mean_area=sum(areas) / len(areas), max_area=max(areas), **_measure_totals(rows)))
    return out


def _measure_totals(rows: list[list]) -> dict:
    """One prompt's measurement columns summed over its rows: {regions, length, widest, band, area, unit}, or {}
    when the rows have none or mix units."""
    measured = [r for r in rows if len(r) > _COL["unit"] and r[_COL["unit"]] != ""]
    if not measured or len({r[_COL["unit"]] for r in measured}) > 1:
        return {}

    def figures(column):
        return [(float(r[_COL[column]]), r) for r in measured if r[_COL[column]] != ""]

    lengths, widths, areas = figures("length"), figures("max_width"), figures("area")
    widest = max(widths, key=lambda pair: pair[0], default=None)
    return {"regions": sum(int(r[_COL["count"]]) for r in measured), "unit": measured[0][_COL["unit"]],
            "length": sum(v for v, _ in lengths) if lengths else None,
            "widest": widest[0] if widest else None, "band": widest[1][_COL["band"]] if widest else "",
            "area": sum(v for v, _ in areas) if areas else None}


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0; display: inline-block; } figcaption { font-size: 0.85em; margin-top: 0.2em; }
img { display: block; max-width: 240px; border-radius: 3px; }
.found { color: #0a7a2f; font-weight: 600; } .absent { color: #888; }
i.sw { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.35em; }
"""


def _swatch(index: int) -> str:
    return '<i class="sw" style="background:#{:02x}{:02x}{:02x}"></i>'.format(*colour_for(index))


def _totals_table(prompt_totals: list[PromptTotal], order: dict[str, int]) -> list[str]:
    lines = ["<h2>Totals per prompt</h2>", '<table id="totals"><tr><th>prompt</th><th>photos</th><th>found</th>'
             "<th>found %</th><th>mean area %</th><th>max area %</th><th>regions</th><th>total length</th>"
             "<th>widest</th><th>band</th><th>total area</th><th>unit</th></tr>"]

    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    for t in prompt_totals:
        lines.append(f"<tr><td>{_swatch(order[t.prompt])}{html.escape(t.prompt)}</td><td class=num>{t.photos}</td>"
                     f"<td class=num>{t.found}</td><td class=num>{100.0 * t.found / max(t.photos, 1):.0f}</td>"
                     f"<td class=num>{t.mean_area:.2f}</td><td class=num>{t.max_area:.2f}</td>"
                     f"<td class=num>{num(t.regions, 'd')}</td><td class=num>{num(t.length, ',.0f')}</td>"
                     f"<td class=num>{num(t.widest, '.1f')}</td><td>{html.escape(t.band)}</td>"
                     f"<td class=num>{num(t.area, ',.0f')}</td><td>{html.escape(t.unit)}</td></tr>")
    lines.append("</table>")
    return lines


def measure_text(row: list) -> str:
    """A CSV row's measurements in words: "; 2 cracks, 431 px long, widest 5.1 px" or "; 1 region, 2,300 px²"
    ("" when the row has none, or no region)."""
    if "count" not in _COL or len(row) <= _COL["count"] or not row[_COL["count"]]:
        return ""
    count, unit = int(row[_COL["count"]]), row[_COL["unit"]]
    if row[_COL["length"]] != "":
        band = row[_COL["band"]]
        band = f" ({band})" if band and band != "no scale" else ""
        return (f"; {count} crack{'s' if count != 1 else ''}, {float(row[_COL['length']]):,.0f} {unit} long, widest "
                f"{float(row[_COL['max_width']]):.1f} {unit}{band}")
    return f"; {count} region{'s' if count != 1 else ''}, {float(row[_COL['area']]):,.0f} {unit}"


def _photo_row(entry: ReportPhoto, order: dict[str, int]) -> str:
    cells = []
    for row in entry.rows:
        prompt, found = row[_COL["prompt"]], row[_COL["found"]] == "found"
        flag = '<span class="found">found</span>' if found else '<span class="absent">not found</span>'
        uri = entry.thumbnails.get(prompt)
        img = f'<img src="{uri}" alt="{html.escape(entry.photo)}: {html.escape(prompt)}">' if uri else ""
        cells.append(f"<td><figure>{img}<figcaption>{_swatch(order[prompt])}{html.escape(prompt)}: {flag}, "
                     f"area {float(row[_COL['area_percent']]):.2f}%, max score {float(row[_COL['max_score']]):.2f}"
                     f"{html.escape(measure_text(row))}</figcaption></figure></td>")
    return f'<tr class="photo"><td>{html.escape(entry.photo)}</td>{"".join(cells)}</tr>'


def render_report(photos: Sequence[ReportPhoto], *, title: str = "Drywall QA batch report", model: str = "",
                  threshold: str = "each prompt's own") -> str:
    """The report's HTML: a header (model, threshold, counts), the totals per prompt, then a row per photo."""
    order: dict[str, int] = {}
    for entry in photos:
        for row in entry.rows:
            order.setdefault(row[_COL["prompt"]], len(order))
    prompt_totals = totals(photos)
    meta = f"{_count(len(photos), 'photo')} · {_count(len(order), 'prompt')} · threshold {html.escape(threshold)}"
    if model:
        meta = f"model {html.escape(model)} · " + meta
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f'<p class="meta">{meta}</p>', *_totals_table(prompt_totals, order),
             "<h2>Photos</h2>", '<table id="photos"><tr><th>photo</th>'
             + "".join(f"<th>{html.escape(p)}</th>" for p in order) + "</tr>",
             *(_photo_row(entry, order) for entry in photos), "</table>", "</body></html>", ""]
    return "\n".join(lines)


def write_report(photos: Sequence[ReportPhoto], path, **kwargs) -> Path:
    """`render_report` written atomically to `path`."""
    return atomic_write_text(Path(path), render_report(photos, **kwargs))
