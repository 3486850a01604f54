"""Segment one photo into everything the Segment tab shows: overlay, heatmap, legend, table and mask files.

Memory is bounded by design: the model's maps stay at model resolution (`engine.prediction`); what
is shown is drawn at display size (long side <= DISPLAY_MAX_SIDE); the full-size mask files are upsampled one
prompt at a time, band by band, and written before the next one is built. A 12240 x 12240 PNG with 8 prompts
peaks at the figure in docs/speed.md ("Memory").
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.draw import blend_heatmap, legend, number_regions, overlay, side_by_side
from engine.images import load_image
from engine.masks import mask_names, save_mask

__all__ = ["SegmentResult", "TABLE_HEADERS", "DISPLAY_MAX_SIDE", "example_rows", "image_id_for", "segment_photo",
           "slider_threshold"]

# "pixel thr" makes a pixel part of the mask; "presence thr" decides whether the prompt is in the photo at all
# (presence: how strongly the map's best 3 x 3 patch fires, engine.prediction); both are calibrated per prompt.
# Then each prompt's measurements (engine.measure): regions, total crack length, widest crack and its width band
# (BRE Digest 251; "no scale" without one), area of area-like prompts, and the unit (mm with a scale, else px).
TABLE_HEADERS = ["prompt", "found", "area %", "presence", "max score", "pixel thr", "presence thr", "ms",
                 "count", "total length", "widest", "band", "area", "unit"]
DISPLAY_MAX_SIDE = 1600  # long side (px) of the images shown; the mask files keep the photo's full size


@dataclass
class SegmentResult:
    """Everything the Segment tab shows for one photo.

    photo, overlay, heatmap: RGB PIL images at display size (long side <= DISPLAY_MAX_SIDE); legend: (prompt,
    "#rrggbb") in overlay colour order; rows: [prompt, "found" / "not found: why", area %, presence, max score,
    pixel threshold, presence threshold, ms] per prompt (TABLE_HEADERS); mask_paths: one PNG per prompt,
    `{image_id}__{prompt_slug}.png`, 0/255 at the photo's full displayed size (empty for a prompt not found).
    threshold: the slider's override, or the model's default when each prompt used its own (`thresholds`);
    warning: the unknown-prompt line or None; precision: the segmenter's precision and why it was chosen.
    """

    photo: Image.Image
    overlay: Image.Image
    heatmap: Image.Image
    legend: list[tuple[str, str]]
    rows: list[list]
    mask_paths: list[Path]
    threshold: float
    model: str
    ms: float
    thresholds: dict[str, float] | None = None
    warning: str | None = None
    precision: str = ""  # what the model runs in and why, e.g. "fp32: bf16 measured 1.7x slower here"
    overridden: bool = False  # True: `threshold` (the slider) applied to every prompt
    measures: dict | None = None  # prompt -> engine.measure.MaskMeasure (regions numbered on the overlay)
    mm_per_px: float | None = None  # the scale used, None: figures in pixels
    size: tuple[int, int] | None = None  # the photo's full (width, height); `photo` and `overlay` are smaller
    source_path: str = ""  # the photo's file, as the app received it


def image_id_for(path: str | os.PathLike | None) -> str:
    """The mask-file stem for an uploaded photo: its file stem, or "photo" when it has no usable name."""
    if not path:
        return "photo"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(path)).stem).strip("._")
    return stem or "photo"


def resize_map(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float map -> (size[1], size[0]) float32, bilinear; size is PIL's (width, height). For display only."""
    if prob.shape[::-1] == tuple(size):
        return prob
    return np.asarray(Image.fromarray(prob.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))


def slider_threshold(segmenter, value) -> float | None:
    """The app's slider as an override: None (each prompt's calibrated threshold) while it sits at the model's
    default, where the model picker puts it; any other value applies to every prompt."""
    if value is None or round(float(value), 2) == round(float(segmenter.threshold), 2):
        return None
    return float(value)


# What the Segment tab shows of TABLE_HEADERS (the API's /segment table keeps every column): the max score and
# ms (the caption has the time) make room for the measurements.
SHOWN_HEADERS = ["prompt", "found", "area %", "presence", "presence thr", "pixel thr", "count", "total length",
                 "widest", "band", "area", "unit"]
REGION_HEADERS = ["prompt", "#", "length", "widest", "mean width", "branches", "band", "area", "long side", "unit"]


def shown_rows(rows: Sequence[Sequence]) -> list[list]:
    """TABLE_HEADERS rows cut to SHOWN_HEADERS."""
    index = [TABLE_HEADERS.index(h) for h in SHOWN_HEADERS]
    return [[row[i] for i in index] for row in rows]


def region_rows(measures: dict) -> list[list]:
    """One REGION_HEADERS row per measured region, numbered as on the overlay ("" where a figure does not apply)."""
    from engine.measure import region_rows as csv_rows  # scikit-image: on first use

    out = []
    for prompt, m in measures.items():
        for row in csv_rows(prompt, m):
            _, index, _, length, max_width, mean_width, branches, area, long_side, band, unit = row
            out.append([prompt, index, length, max_width, mean_width, branches, band, area, long_side,
                        unit if m.kind == "line" else f"{unit}²"])
    return out


def line_scale(points: Sequence[Sequence[float]], length_mm: float, shown_size: tuple[int, int],
               photo_size: tuple[int, int]) -> float:
    """mm per photo pixel from a line of known length clicked on the shown image: points are its two ends (x, y)
    in the shown image's pixels (the overlay, at most DISPLAY_MAX_SIDE), scaled to the photo's full size."""
    from engine.measure import mm_per_px_from_line

    if len(points) != 2:
        raise ValueError(f"Click the two ends of something of known length on the overlay ({len(points)} of 2 "
                         "clicked so far), then give its length in mm.")
    sx, sy = photo_size[0] / shown_size[0], photo_size[1] / shown_size[1]
    (x0, y0), (x1, y1) = points
    return mm_per_px_from_line((x0 * sx, y0 * sy), (x1 * sx, y1 * sy), float(length_mm or 0))


def region_tags(measures: dict, photo_size: tuple[int, int], shown_size: tuple[int, int]
                ) -> list[tuple[float, float, str, int]]:
    """(x, y, number, colour index) for each measured region, at the shown image's scale: region k of prompt i
    tagged "k" in prompt i's colour, the numbers the measurement table and CSV use."""
    sx, sy = shown_size[0] / photo_size[0], shown_size[1] / photo_size[1]
    return [(r.centroid[0] * sx, r.centroid[1] * sy, str(r.index), i)
            for i, m in enumerate(measures.values()) for r in m.regions]


def found_text(pred, prompt: str) -> str:
    """"found", or "not found" and why: its presence below the presence threshold (a bright pixel or two is not
    enough: presence is the best 3 x 3 patch's mean, so a max score above the pixel threshold can still miss)."""
    if pred.found(prompt):
        return "found"
    return f"not found: presence {pred.presence[prompt]:.2f} < {pred.presence_thresholds[prompt]:.2f}"


def segment_photo(segmenter, image, prompts: Sequence[str], *, threshold: float | None = None,
                  image_id: str = "photo", out_dir: str | os.PathLike, mm_per_px: float | None = None,
                  photo_width_mm: float | None = None) -> SegmentResult:
    """Segment one photo for several prompts: overlay, heatmap, per-prompt table and mask PNGs.

    image: a path (or anything `engine.images.load_image` reads); threshold: None for each prompt's calibrated
    threshold (the model's default where it has none), or one value for every prompt. A prompt not found
    (see `engine.prediction`) gets an empty mask. Masks are written to `out_dir` at the photo's full displayed
    size, one prompt at a time, and measured (`engine.measure.measure_prompt`): in mm with `mm_per_px`, or with
    `photo_width_mm` (the real width of what the photo shows), else in pixels.
    """
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"Threshold {threshold} is outside [0, 1]; pick a value on the slider.")
    warning = segmenter.prompt_warning(prompts)
    start = time.perf_counter()
    pred = segmenter.prediction(image, prompts, threshold=threshold)
    ms = float(pred.ms or (time.perf_counter() - start) * 1000)
    from engine.measure import measure_prompt, mm_per_px_from_width, summary_columns  # scikit-image: on first use

    names = mask_names(image_id, pred.prompts)
    out_dir = Path(out_dir)
    if photo_width_mm:
        mm_per_px = mm_per_px_from_width(float(photo_width_mm), pred.size[0])
    meta = getattr(segmenter, "meta", None)
    paths, rows, measures = [], [], {}
    for p in pred.prompts:  # one full-size mask at a time: built, measured, written, dropped
        mask = pred.mask(p)
        area = 100.0 * float(np.count_nonzero(mask)) / mask.size
        paths.append(save_mask(mask, out_dir / names[p]))
        measures[p] = measure_prompt(mask, p, meta, mm_per_px=mm_per_px or None)
        del mask
        rows.append([p, found_text(pred, p), round(area, 2), round(pred.presence[p], 3), round(pred.max_score(p), 3),
                     round(pred.thresholds[p], 2), round(pred.presence_thresholds[p], 2), round(ms, 1),
                     *summary_columns(measures[p])])

    photo = load_image(image, max_side=DISPLAY_MAX_SIDE)
    shown_masks = {p: pred.mask(p, photo.size) for p in pred.prompts}
    heats = [blend_heatmap(photo, pred.probability(p, photo.size)) for p in pred.prompts]
    heat = heats[0] if len(heats) == 1 else side_by_side(heats, pred.prompts)
    shown = number_regions(overlay(photo, shown_masks), region_tags(measures, pred.size, photo.size))
    return SegmentResult(photo=photo, overlay=shown, heatmap=heat, legend=legend(shown_masks),
                         rows=rows, mask_paths=paths, threshold=segmenter.threshold if threshold is None else
                         float(threshold), model=str(getattr(segmenter, "name", "model")), ms=ms,
                         thresholds=dict(pred.thresholds), warning=warning,
                         precision=getattr(segmenter, "precision_reason", "") or getattr(segmenter, "precision", ""),
                         overridden=threshold is not None, measures=measures, mm_per_px=mm_per_px or None,
                         size=tuple(pred.size))


def example_rows(examples_dir: str | os.PathLike, default_prompts: Sequence[str]) -> list[list[str]]:
    """[photo path, prompts text (one per line)] per example .jpg, the prompts from examples/prompts.json.

    A photo that prompts.json does not name gets `default_prompts`; a folder without prompts.json, all of them.
    """
    examples_dir = Path(examples_dir)
    prompts_file = examples_dir / "prompts.json"
    prompts = json.loads(prompts_file.read_text()) if prompts_file.is_file() else {}
    return [[str(p), "\n".join(prompts.get(p.name, default_prompts))] for p in sorted(examples_dir.glob("*.jpg"))]
