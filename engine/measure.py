"""From a binary mask to the numbers an inspector writes down: how many, how long, how wide, how much area.

A mask from anywhere (this model, another tool, a hand-labelled one) is split into connected regions (8-neighbour,
`skimage.measure.label`); regions smaller than `min_area` pixels are speckle and are dropped (counted apart).
What is measured depends on the prompt's kind:

    line (a crack)   length: the skeleton (`skimage.morphology.thin`) cut into branches at its ends and
                     junctions, each traced and simplified to within a pixel (`approximate_polygon`, so a
                     digital staircase counts as the slanted line it draws), plus the radius at each free end
                     (a skeleton stops half a width short of a line's end); spurs shorter than the width are
                     left out; width: twice the distance to the background
                     (`scipy.ndimage.distance_transform_edt`) along the skeleton, read on both sides of the
                     ridge: a skeleton pixel's distance plus that of its neighbour on the side away from its
                     nearest background pixel (2 x distance - 1 for a ridge one pixel wide, 2 x distance for
                     one two pixels wide), so a line of w rows measures w: the maximum, and the mean as
                     area / length; branches: the skeleton's branches left after the spurs.
    area (taping)    area, and the long side: the region's largest Feret diameter.

A scale turns pixels into millimetres (`mm_per_px`, from a number, from the real width of what the photo shows,
or from a drawn line of known length); without one every figure is in pixels and says so. A crack's width band
follows BRE Digest 251 (Building Research Establishment, "Assessment of damage in low-rise buildings"), the
classification UK surveyors use for crack widths: 0 negligible < 0.1 mm, 1 very slight <= 1 mm, 2 slight <= 5 mm,
3 moderate <= 15 mm, 4 severe <= 25 mm, 5 very severe above.
Accuracy on drawn lines and on the labelled crack photos: docs/measurements.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.measure import approximate_polygon, label, regionprops
from skimage.morphology import thin

__all__ = ["BRE_BANDS", "DEFAULT_MIN_AREA", "LINE_WORDS", "MEASURE_HEADER", "MEASURE_MAX_SIDE", "MaskMeasure",
           "Region", "SUMMARY_HEADERS", "band_for", "is_line_prompt", "line_prompts", "measure_mask",
           "measure_prompt", "mm_per_px_from_line", "mm_per_px_from_width", "region_rows", "summary_columns"]

# BRE Digest 251's crack-width categories: (upper bound in mm, name); the last has no upper bound.
BRE_BANDS: tuple[tuple[float, str], ...] = ((0.1, "0 negligible"), (1.0, "1 very slight"), (5.0, "2 slight"),
                                             (15.0, "3 moderate"), (25.0, "4 severe"), (math.inf, "5 very severe"))
# Regions under this many pixels are speckle. Measured on the bundled model's crack masks of cracks/valid (640 px
# photos; `python tools/measure_accuracy.py --min-area-sweep`): the median error of a photo's total crack length
# is 24.9% with every region kept, 22.6% from 20 to 100 px, and grows past 100 (23.3% at 400, real crack pieces
# going), while the regions per photo fall from 8.8 to 4.6 (the labels: 1.6). 100 px is the most speckle dropped
# for no loss of length.
DEFAULT_MIN_AREA = 100
# A prompt names a line-like thing when it holds one of these words (a model's drywall_qa.json can list its
# line-like prompts instead: "line_prompts").
LINE_WORDS = ("crack", "fissure", "fracture", "hairline")
NO_SCALE = "no scale"


@dataclass(frozen=True)
class Region:
    """One connected region. Lengths and widths in `unit` (mm, or px without a scale), area in unit squared.

    length, max_width, mean_width, branches, band: lines only (None for areas); long_side: areas only;
    centroid: (x, y) in pixels, for numbering regions on an overlay.
    """

    index: int
    area: float
    centroid: tuple[float, float]
    length: float | None = None
    max_width: float | None = None
    mean_width: float | None = None
    branches: int | None = None
    long_side: float | None = None
    band: str | None = None


@dataclass(frozen=True)
class MaskMeasure:
    """A mask's regions, largest first for areas and longest first for lines. kind: "line" or "area"; unit:
    "mm" or "px"; dropped: speckle regions under `min_area` pixels."""

    kind: str
    unit: str
    mm_per_px: float | None
    regions: list[Region] = field(default_factory=list)
    dropped: int = 0

    @property
    def count(self) -> int:
        return len(self.regions)

    @property
    def total_length(self) -> float:
        return float(sum(r.length or 0.0 for r in self.regions))

    @property
    def total_area(self) -> float:
        return float(sum(r.area for r in self.regions))

    @property
    def widest(self) -> Region | None:
        lines = [r for r in self.regions if r.max_width is not None]
        return max(lines, key=lambda r: r.max_width) if lines else None


def band_for(width_mm: float | None, bands: Sequence[tuple[float, str]] = BRE_BANDS) -> str:
    """The band of a crack's width in mm (BRE Digest 251 by default); "no scale" when the width is in pixels."""
    if width_mm is None:
        return NO_SCALE
    return next(name for upper, name in bands if width_mm <= upper)


def mm_per_px_from_width(photo_width_mm: float, photo_width_px: int) -> float:
    """The scale from the real width of what the photo shows (e.g. a 1200 mm board across 4000 px)."""
    if photo_width_mm <= 0 or photo_width_px <= 0:
        raise ValueError(f"The photo's real width ({photo_width_mm} mm) and width in pixels ({photo_width_px}) must "
                         "be positive; measure the wall across the photo, e.g. 1200 mm for a standard board.")
    return float(photo_width_mm) / float(photo_width_px)


def mm_per_px_from_line(start: tuple[float, float], end: tuple[float, float], length_mm: float) -> float:
    """The scale from a line of known length drawn on the photo: start and end (x, y) in photo pixels."""
    pixels = math.hypot(end[0] - start[0], end[1] - start[1])
    if pixels <= 0 or length_mm <= 0:
        raise ValueError("Draw the reference line between two different points and give its real length in mm "
                         "(e.g. a tape measure's 500 mm).")
    return float(length_mm) / pixels


def line_prompts(meta: Mapping | None) -> list[str] | None:
    """The line-like prompts a model lists in its drywall_qa.json ("line_prompts"), or None when it lists none."""
    listed = (meta or {}).get("line_prompts")
    return [str(p) for p in listed] if isinstance(listed, list) else None


def is_line_prompt(prompt: str, meta: Mapping | None = None) -> bool:
    """Whether a prompt names a line-like thing (a crack): from the model's list when it has one, else from the
    prompt's words (LINE_WORDS)."""
    listed = line_prompts(meta)
    if listed is not None:
        return prompt in listed
    text = prompt.lower()
    return any(word in text for word in LINE_WORDS)


_STEPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbours(skeleton: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Each skeleton pixel's linked neighbours (8-neighbour; a diagonal link is left out where a skeleton pixel
    in its corner already joins the two by orthogonal steps, so an L corner is not a triangle)."""
    pixels = set(zip(*np.nonzero(skeleton)))
    links: dict[tuple[int, int], list[tuple[int, int]]] = {p: [] for p in pixels}
    for y, x in pixels:
        for dy, dx in _STEPS:
            q = (y + dy, x + dx)
            if q not in pixels:
                continue
            if dy and dx and ((y + dy, x) in pixels or (y, x + dx) in pixels):
                continue
            links[(y, x)].append(q)
    return links


def _branches(links: dict) -> list[list[tuple[int, int]]]:
    """The skeleton cut into branches at its ends and junctions: each an ordered list of pixels from one node
    (a pixel with other than two links) to the next; a loop without nodes is one branch."""
    nodes = {p for p, n in links.items() if len(n) != 2}
    seen_links, branches = set(), []

    def walk(start, first):
        path, prev, here = [start], start, first
        while True:
            seen_links.add(frozenset((prev, here)))
            path.append(here)
            if here in nodes or here == start:
                return path
            nxt = [q for q in links[here] if q != prev]
            if not nxt:
                return path
            prev, here = here, nxt[0]

    for node in sorted(nodes):
        for q in links[node]:
            if frozenset((node, q)) not in seen_links:
                branches.append(walk(node, q))
    for p in sorted(links):  # loops: every pixel has two links
        if links[p] and frozenset((p, links[p][0])) not in seen_links:
            branches.append(walk(p, links[p][0]))
    return branches


def _path_length(path: list[tuple[int, int]]) -> float:
    """A branch's length: the polyline through its pixels simplified to within a pixel (Douglas-Peucker,
    `skimage.measure.approximate_polygon`), so a digital staircase along a slanted line counts as the line."""
    if len(path) < 2:
        return 0.0
    points = approximate_polygon(np.asarray(path, float), tolerance=1.0)
    return float(np.hypot(*np.diff(points, axis=0).T).sum())


def _ridge_widths(distance: np.ndarray, nearest: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Width (px) at each skeleton pixel, in np.nonzero(skeleton) order: the pixel's distance to the background
    plus that of its neighbour one step away from its nearest background pixel, i.e. both halves of the
    cross-section.

    distance: (H, W) float64 from `distance_transform_edt` of the region padded with background; nearest: its
    (2, H, W) indices of each pixel's nearest background pixel; skeleton: (H, W) bool. Distances run between pixel
    centres, so for a ridge one pixel wide (an odd number of rows) the neighbour lies a pixel nearer the far edge
    (2 d - 1) and for a ridge two pixels wide (even) it is the ridge's other row (2 d): w rows measure w. The step
    is orthogonal, along the larger component of the way to the background: a diagonal step would cross two rows
    of a 45 degree line. Where the step runs along the skeleton (near a free end, whose nearest background is the
    end itself), 2 d - 1.
    """
    ys, xs = np.nonzero(skeleton)
    away_y, away_x = nearest[0][ys, xs] - ys, nearest[1][ys, xs] - xs
    vertical = np.abs(away_y) >= np.abs(away_x)
    qy = ys - np.where(vertical, np.sign(away_y), 0)
    qx = xs - np.where(vertical, 0, np.sign(away_x))
    here = distance[ys, xs]
    return np.where(skeleton[qy, qx], 2 * here - 1, here + distance[qy, qx])


def _line_figures(region: np.ndarray) -> tuple[float, float, int]:
    """(length px, max width px, branches) of one region's mask (H, W bool, the region alone).

    A short branch that ends free is a spur of the skeleton (a corner of a thick line), not a branch of the
    crack: one no longer than the width where it leaves the crack is left out of the length and the count.
    """
    region = np.pad(region, 1)  # background all round: a region cut by the photo's edge ends there
    distance, nearest = ndimage.distance_transform_edt(region, return_indices=True)
    skeleton = thin(region)  # thinning keeps a 2 px diagonal staircase, which skeletonize erases whole
    if not skeleton.any():  # thinner than a skeleton can show
        return 1.0, 1.0, 1
    links = _neighbours(skeleton)
    branches = _branches(links)
    radius = {p: float(distance[p]) - 0.5 for p in links}  # a pixel centre lies half a pixel inside its edge
    kept, length, spurs_at, joins_at = 0, 0.0, {}, {}
    for path in branches:
        free_end = [p for p in (path[0], path[-1]) if len(links[p]) == 1]
        joined = [p for p in (path[0], path[-1]) if len(links[p]) >= 3]
        piece = _path_length(path)
        if free_end and joined and piece <= 2 * max(radius[p] for p in joined) + 1:
            for p in joined:  # a spur
                spurs_at[p] = spurs_at.get(p, 0) + 1
            continue
        for p in joined:
            joins_at[p] = joins_at.get(p, 0) + 1
        kept += 1
        length += piece + sum(max(radius[p], 0.0) for p in free_end)  # the skeleton stops a radius short
    # A junction left with one branch once its spurs are gone is where the crack ends (the fork a skeleton makes
    # at a square end): it stops a radius short too.
    length += sum(max(radius[p], 0.0) for p, n in spurs_at.items() if joins_at.get(p, 0) == 1)
    if not branches:  # one lone skeleton pixel: a blob as long as it is wide
        length = 2 * max(radius.values())
    max_width = float(_ridge_widths(distance, nearest, skeleton).max())
    return max(length, 1.0), max(max_width, 1.0), max(kept, 1)


def measure_mask(mask: np.ndarray, *, kind: str = "line", mm_per_px: float | None = None,
                 min_area: int = DEFAULT_MIN_AREA, bands: Sequence[tuple[float, str]] = BRE_BANDS,
                 pixel_size: float = 1.0) -> MaskMeasure:
    """Measure every region of a mask.

    mask: (H, W) bool or 0/255 (any non-zero is the object); kind: "line" (cracks) or "area" (taping);
    mm_per_px: the photo's scale, None for pixels; min_area: regions under this many photo pixels are speckle;
    pixel_size: photo pixels per mask pixel (a mask measured at a reduced size, `measure_prompt`).
    """
    if kind not in ("line", "area"):
        raise ValueError(f"kind must be 'line' or 'area', got {kind!r}.")
    if mm_per_px is not None and mm_per_px <= 0:
        raise ValueError(f"mm_per_px must be positive, got {mm_per_px}.")
    binary = np.asarray(mask) > 0
    if binary.ndim != 2:
        raise ValueError(f"A mask is one (H, W) plane; got shape {binary.shape}.")
    labels = label(binary, connectivity=2)
    scale = (mm_per_px or 1.0) * pixel_size
    min_area = min_area / (pixel_size * pixel_size)
    unit = "mm" if mm_per_px else "px"
    regions, dropped = [], 0
    for props in regionprops(labels):
        if props.area < min_area:
            dropped += 1
            continue
        cy, cx = props.centroid
        area = float(props.area) * scale * scale
        if kind == "line":
            length, width, branches = _line_figures(props.image)
            max_width = width * scale
            regions.append(Region(index=0, area=area, centroid=(float(cx), float(cy)), length=length * scale,
                                  max_width=max_width, mean_width=float(props.area) / length * scale,
                                  branches=branches, band=band_for(max_width if mm_per_px else None, bands)))
        else:
            regions.append(Region(index=0, area=area, centroid=(float(cx), float(cy)),
                                  long_side=float(props.feret_diameter_max) * scale))
    key = (lambda r: -(r.length or 0.0)) if kind == "line" else (lambda r: -r.area)
    ordered = [Region(**{**r.__dict__, "index": i}) for i, r in enumerate(sorted(regions, key=key), 1)]
    return MaskMeasure(kind=kind, unit=unit, mm_per_px=mm_per_px, regions=ordered, dropped=dropped)


# Masks larger than this on their long side are measured at this size (box-filtered), scaled back: thinning
# and the distance transform of a 12000 px mask would take gigabytes; a crack under a pixel of the reduced
# mask (about 6 photo pixels at 12000 px) is then measured at that pixel's width.
MEASURE_MAX_SIDE = 2048


def measure_prompt(mask: np.ndarray, prompt: str, meta: Mapping | None = None, *, kind: str | None = None,
                   mm_per_px: float | None = None, min_area: int = DEFAULT_MIN_AREA,
                   max_side: int = MEASURE_MAX_SIDE) -> MaskMeasure:
    """`measure_mask` for a prompt's mask at its photo's size: the kind from the prompt (`is_line_prompt`) unless
    `kind` says it, and a mask over `max_side` measured at that size (figures still in the photo's pixels or in
    mm)."""
    kind = kind or ("line" if is_line_prompt(prompt, meta) else "area")
    mask = np.asarray(mask)
    factor = max(mask.shape) / max_side
    if factor <= 1:
        return measure_mask(mask, kind=kind, mm_per_px=mm_per_px, min_area=min_area)
    size = (max(1, round(mask.shape[1] / factor)), max(1, round(mask.shape[0] / factor)))
    full = (mask > 0).view(np.uint8) * np.uint8(255)  # one byte a pixel: no int64 copy of a 144 MP mask
    small = np.asarray(Image.fromarray(full).resize(size, Image.Resampling.BOX)) > 127
    del full
    return measure_mask(small, kind=kind, mm_per_px=mm_per_px, min_area=min_area,
                        pixel_size=mask.shape[1] / size[0])


SUMMARY_HEADERS = ["count", "total length", "widest", "band", "area", "unit"]
MEASURE_HEADER = ["mask", "region", "kind", "length", "max_width", "mean_width", "branches", "area", "long_side",
                  "band", "unit"]


def summary_columns(m: MaskMeasure) -> list:
    """[count, total length, widest width, its band, total area, unit] for a table or CSV row: lengths for a
    line prompt, area for an area prompt, "" where a figure does not apply."""
    widest = m.widest
    if m.kind == "line":
        return [m.count, round(m.total_length, 1), round(widest.max_width, 2) if widest else "",
                widest.band if widest else "", "", m.unit]
    return [m.count, "", "", "", round(m.total_area, 1), f"{m.unit}²" if m.unit == "mm" else "px²"]


def region_rows(name: str, m: MaskMeasure) -> Iterable[list]:
    """CSV rows (MEASURE_HEADER), one per region ("" where a figure does not apply)."""
    for r in m.regions:
        yield [name, r.index, m.kind, _r(r.length), _r(r.max_width), _r(r.mean_width),
               "" if r.branches is None else r.branches, _r(r.area), _r(r.long_side), r.band or "", m.unit]


def _r(value: float | None, digits: int = 2):
    return "" if value is None else round(float(value), digits)
