"""What a label is, whatever file it came from: an item (photo + label file), shapes or a mask file, and the
checks the readers share. Shapes are rasterised only when a mask is asked for, at the image's own pixel size.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from engine.data.rle import decode_rle
from engine.errors import LabelError, LabelWarning
from engine.images import IMAGE_SUFFIXES

# Normalised coordinates this far outside [0, 1] are an error (pixel coordinates, wrong file); closer ones are
# annotation-tool rounding and are clipped.
COORDINATE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Item:
    """One photo of a set. label_path: its YOLO .txt, mask image or COCO json (None when it has none)."""

    image_path: Path
    label_path: Path | None
    image_id: str  # the image file's stem


@dataclass(frozen=True, eq=False)
class ShapeLabel:
    """Objects of one image as polygons, boxes and COCO RLEs; `mask` unions them at any pixel size.

    polygons: each (N, 2) float64, (x, y), N >= 3. boxes: (x0, y0, x1, y1). Units: fractions of the image
    width/height when `normalised` (YOLO), else pixels (COCO). rles: ((height, width), run lengths) in COCO's
    column-major order, starting with a run of 0s.
    """

    polygons: tuple[np.ndarray, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    rles: tuple[tuple[tuple[int, int], np.ndarray], ...] = ()
    normalised: bool = True
    source: Path | None = None  # the label file, for error messages

    def mask(self, width: int, height: int) -> np.ndarray:
        """(height, width) bool mask, True inside any object."""
        return rasterise(self, width, height)


@dataclass(frozen=True, eq=False)
class MaskFileLabel:
    """A mask image on disk; non-zero pixels are the object."""

    path: Path

    def mask(self, width: int, height: int) -> np.ndarray:
        """(height, width) bool mask read from the file; LabelError when the file has another size."""
        mask = read_mask_file(self.path)
        if mask.shape != (height, width):
            raise LabelError(
                self.path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}; resize the mask "
                "to the image (nearest neighbour) or export both again.",
            )
        return mask


def rasterise(label: ShapeLabel, width: int, height: int) -> np.ndarray:
    """Union of the label's polygons, boxes and RLEs as a (height, width) bool mask.

    Polygons are filled with PIL ImageDraw (edges included, so a hairline crack keeps its pixels); a box
    covers the pixels whose centres lie inside it (at least one pixel; none for a zero-area box), so its area is
    w*W x h*H, rounded.
    """
    scale_x, scale_y = (width, height) if label.normalised else (1.0, 1.0)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in label.polygons:
        draw.polygon((polygon * (scale_x, scale_y)).ravel().tolist(), fill=1, outline=1)
    mask = np.array(canvas, dtype=bool)
    for x0, y0, x1, y1 in label.boxes:
        if x1 <= x0 or y1 <= y0:  # zero-area box: nothing to cover
            continue
        c0, r0 = min(max(round(x0 * scale_x), 0), width - 1), min(max(round(y0 * scale_y), 0), height - 1)
        c1, r1 = max(round(x1 * scale_x), c0 + 1), max(round(y1 * scale_y), r0 + 1)
        mask[r0:r1, c0:c1] = True
    for (rle_height, rle_width), counts in label.rles:
        if (rle_height, rle_width) != (height, width):
            raise LabelError(
                label.source or "<labels>",
                f"RLE mask is {rle_width}x{rle_height} but the image is {width}x{height}; export again.",
            )
        mask |= decode_rle(counts, (height, width))
    return mask


def read_mask_file(path: Path) -> np.ndarray:
    """(H, W) bool: non-zero pixels of a mask image (colour channels only; alpha ignored; palette index != 0)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise LabelError(path, f"mask image cannot be read ({exc}); export it again as PNG.") from exc
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        image = image.convert("RGB" if image.mode in ("RGBA", "RGBa") else "L")
    values = np.asarray(image)
    return values.any(axis=2) if values.ndim == 3 else values != 0


def polygon_points(values: list[float], path: Path, where: int | str) -> np.ndarray:
    """Flat [x1, y1, x2, y2, ...] (YOLO line or COCO annotation) as (N, 2) points, N >= 3."""
    if len(values) % 2:
        raise LabelError(path, f"odd number of polygon coordinates ({len(values)}); each point needs x and y.", where)
    if len(values) < 6:
        raise LabelError(path, f"a polygon needs at least 3 points, got {len(values) // 2}.", where)
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def clip_normalised(points: np.ndarray, path: Path, number: int | str) -> np.ndarray:
    """(N, 2) fractions of the image size, clipped to [0, 1]; LabelError when far outside it."""
    low, high = float(points.min()), float(points.max())
    if low < -COORDINATE_TOLERANCE or high > 1 + COORDINATE_TOLERANCE:
        bad = low if low < -COORDINATE_TOLERANCE else high
        raise LabelError(
            path,
            f"coordinate {bad:g} is far outside [0, 1]; YOLO coordinates are fractions of the image width and "
            "height (pixel coordinates must be divided by the image size).",
            number,
        )
    return np.clip(points, 0.0, 1.0)


def is_outside(path: Path, root: Path) -> bool:
    """True when `path`, links followed, lies outside the folder `root` (links followed too).

    Every file a data set names (COCO file_name, a data.yaml split, an image, label or mask) must lie inside
    its folder: a labelled set, uploaded or not, never reads the rest of the server.
    """
    return not Path(path).resolve().is_relative_to(Path(root).resolve())


def is_absolute_name(name: str) -> bool:
    """True for a file name that is absolute on any system: "/x", "\\\\host\\x" or "C:/x"."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) is not None


def unsafe_name(name: str) -> bool:
    """True for a file name that is absolute ("/x", "C:/x", "\\\\host\\x") or climbs out with "..": it would name
    a file outside the folder it is read from."""
    return is_absolute_name(name) or ".." in name.replace("\\", "/").split("/")


def fail_or_warn(error: Exception, skip_bad: bool) -> None:
    """Raise `error`, or with skip_bad warn that its item is skipped."""
    if not skip_bad:
        raise error
    warnings.warn(f"skipped: {error}", LabelWarning, stacklevel=4)


def image_files(folder: Path, root: Path | None = None) -> list[Path]:
    """Image files directly in `folder` (suffix in IMAGE_SUFFIXES, not hidden), sorted by name.

    root: the data set folder they must lie in (default: `folder`); a link to a file elsewhere raises
    LabelError, whatever skip_bad says (see `is_outside`).
    """
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    root = folder if root is None else root
    for path in files:
        if is_outside(path, root):
            raise LabelError(path.relative_to(root.parent), "is a link to a file outside the data set's folder; "
                                                             "copy the file itself into the folder.")
    return files
