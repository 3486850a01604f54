"""COCO JSON labels (Roboflow's `_annotations.coco.json`): polygons, RLE (plain or compressed) or boxes, in pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.data.labels import Item, ShapeLabel, clip_normalised, fail_or_warn, is_outside, polygon_points, unsafe_name
from engine.data.rle import rle_counts_from_string
from engine.errors import ImageError, LabelError
from engine.images import image_size

COCO_FILE_NAME = "_annotations.coco.json"  # Roboflow's COCO export: one per split folder, next to the images


def coco_items(json_path: Path, skip_bad: bool, categories: tuple | None) -> tuple[list[Item], list[ShapeLabel]]:
    """Images listed in a COCO json (files next to it), each with the union of its selected annotations.

    Labels are in pixels (normalised=False). categories: names or ids to keep; None: all but the background.
    A bad annotation or image raises LabelError, or with skip_bad drops that image with a LabelWarning; a
    file_name outside the json's folder (absolute, "..", a link) always raises.
    """
    data = _read_coco_json(json_path)
    entries = _coco_images(data, json_path)
    selected = _coco_category_filter(data.get("categories") or [], categories, json_path)
    shapes: dict[object, list] = {image_id: [] for image_id in entries}
    bad: set[object] = set()
    for index, annotation in enumerate(data.get("annotations") or []):
        where = f"annotation {index}"
        try:
            if not isinstance(annotation, dict):
                raise LabelError(json_path, "an annotation must be an object.", where)
            image_id = annotation.get("image_id")
            if image_id not in entries:
                raise LabelError(json_path, f"image_id {image_id!r} is not in 'images'; export the set again.", where)
        except LabelError as error:
            fail_or_warn(error, skip_bad)
            continue
        if selected is not None and annotation.get("category_id") not in selected:
            continue
        try:
            shapes[image_id].extend(_coco_shapes(annotation, entries[image_id], json_path, where))
        except LabelError as error:
            fail_or_warn(error, skip_bad)
            bad.add(image_id)

    items, labels = [], []
    for image_id, entry in sorted(entries.items(), key=lambda kv: kv[1]["file_name"]):
        if image_id in bad:
            continue
        image_path = json_path.parent / entry["file_name"]
        if is_outside(image_path, json_path.parent):
            raise LabelError(json_path, f"file_name {entry['file_name']!r} is a link to a file outside the folder "
                                        f"of {json_path.name}; copy the image itself there.",
                             f"image id {entry['id']!r}")
        try:
            _check_coco_image(image_path, entry, json_path)
        except (LabelError, ImageError) as error:
            fail_or_warn(error, skip_bad)
            continue
        parts = shapes[image_id]
        label = ShapeLabel(
            polygons=tuple(p for kind, p in parts if kind == "polygon"),
            boxes=tuple(p for kind, p in parts if kind == "box"),
            rles=tuple(p for kind, p in parts if kind == "rle"),
            normalised=False, source=json_path,
        )
        items.append(Item(image_path, json_path, image_path.stem))
        labels.append(label)
    return items, labels


def _read_coco_json(json_path: Path) -> dict:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise LabelError(json_path, f"not valid JSON ({exc.msg}); export it again.", exc.lineno) from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelError(json_path, "not a COCO file: it needs an 'images' list (and 'annotations').")
    return data


def _coco_images(data: dict, json_path: Path) -> dict[object, dict]:
    entries: dict[object, dict] = {}
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise LabelError(json_path, "needs 'id' and 'file_name'.", f"images[{index}]")
        if entry["id"] in entries:
            raise LabelError(json_path, f"image id {entry['id']!r} appears twice.", f"images[{index}]")
        if unsafe_name(entry["file_name"]):  # refused whatever skip_bad says: it names a file off the data set
            raise LabelError(json_path, f"file_name {entry['file_name']!r} points outside the folder of "
                                        f"{json_path.name}; list each image by its path inside that folder "
                                        "(e.g. 'photo.jpg').", f"images[{index}]")
        entries[entry["id"]] = entry
    return entries


def _coco_category_filter(categories: list, wanted: tuple | None, json_path: Path) -> set | None:
    """Category ids whose annotations count; None: every annotation counts (a file without categories)."""
    if not categories:
        return None
    names = {c.get("id"): str(c.get("name", "")) for c in categories if isinstance(c, dict)}
    if wanted is None:
        supers = {str(c.get("supercategory")) for c in categories if isinstance(c, dict)
                  and c.get("supercategory") != c.get("name")}
        background = {i for i, n in names.items() if n.lower() in ("background", "_background_") or n in supers}
        return (set(names) - background) or set(names)
    ids = set()
    for category in wanted:
        matches = [i for i, n in names.items() if category in (i, n)]
        if not matches:
            raise ValueError(f"Unknown category {category!r} in {json_path}; known: {sorted(names.values())}.")
        ids.update(matches)
    return ids


def _coco_shapes(annotation: dict, entry: dict, json_path: Path, where: str) -> list[tuple[str, object]]:
    """One annotation as [("polygon", (N, 2) px), ...], [("box", (x0, y0, x1, y1) px)] or [("rle", ((h, w), runs))].

    segmentation: polygons (one entry per part) or an RLE dict; the bbox only when segmentation is empty/absent.
    """
    segmentation = annotation.get("segmentation")
    width, height = entry.get("width"), entry.get("height")
    if isinstance(segmentation, dict):
        return [("rle", _coco_rle(segmentation, entry, json_path, where))]
    if isinstance(segmentation, list) and segmentation:
        parts = segmentation if isinstance(segmentation[0], list) else [segmentation]
        return [("polygon", _coco_polygon(part, width, height, json_path, where)) for part in parts]
    bbox = annotation.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        x, y, w, h = _coco_numbers(bbox, json_path, where)
        if w <= 0 or h <= 0:
            raise LabelError(json_path, f"bbox width and height must be > 0, got {w:g} x {h:g}.", where)
        corners = _clip_pixels(np.array([[x, y], [x + w, y + h]]), width, height, json_path, where)
        return [("box", tuple(float(v) for v in corners.ravel()))]
    raise LabelError(json_path, "has neither a segmentation (polygons or RLE) nor a 4-number bbox.", where)


def _coco_numbers(values: list, json_path: Path, where: str) -> list[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise LabelError(json_path, "coordinates must be finite numbers.", where)
    return [float(v) for v in values]


def _coco_polygon(part: list, width: object, height: object, json_path: Path, where: str) -> np.ndarray:
    if not isinstance(part, list):
        raise LabelError(json_path, "segmentation must be a list of polygons [[x1, y1, x2, y2, ...], ...].", where)
    points = polygon_points(_coco_numbers(part, json_path, where), json_path, where)
    return _clip_pixels(points, width, height, json_path, where)


def _clip_pixels(points: np.ndarray, width: object, height: object, json_path: Path, where: str) -> np.ndarray:
    """(N, 2) pixel (x, y) clipped to the image; LabelError when far outside (needs the json's width/height)."""
    if not isinstance(width, (int, float)) or not isinstance(height, (int, float)) or width <= 0 or height <= 0:
        return points  # no size in the json: the image's own size is checked when the set opens
    normalised = clip_normalised(points / (width, height), json_path, where)
    return normalised * (width, height)


def _coco_rle(segmentation: dict, entry: dict, json_path: Path, where: str) -> tuple[tuple[int, int], np.ndarray]:
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise LabelError(json_path, f"RLE 'size' must be [height, width], got {size!r}.", where)
    height, width = size
    if (entry.get("height"), entry.get("width")) not in ((None, None), (height, width)):
        raise LabelError(json_path, f"RLE size {width}x{height} differs from the image's "
                                    f"{entry.get('width')}x{entry.get('height')}.", where)
    try:
        if isinstance(counts, str):
            runs = rle_counts_from_string(counts)
        elif isinstance(counts, list) and all(isinstance(v, int) for v in counts):
            runs = counts
        else:
            raise ValueError("RLE 'counts' must be a list of ints or a compressed string.")
        runs = np.asarray(runs, dtype=np.int64)
        if (runs < 0).any() or int(runs.sum()) != height * width:
            raise ValueError(f"RLE runs add up to {int(runs.sum())} pixels, not {height}x{width} = {height * width}.")
    except ValueError as exc:
        raise LabelError(json_path, str(exc), where) from exc
    return (height, width), runs


def _check_coco_image(image_path: Path, entry: dict, json_path: Path) -> None:
    """The image file exists and has the size the json gives it (annotations are in its pixels)."""
    if not image_path.is_file():
        raise LabelError(json_path, f"image {entry['file_name']} is listed but missing from the folder of "
                                    f"{json_path.name}; copy it there or remove it from the json.",
                         f"image id {entry['id']!r}")
    width, height = image_size(image_path)
    listed = (entry.get("width"), entry.get("height"))
    if listed != (None, None) and listed != (width, height):
        raise LabelError(json_path, f"image {entry['file_name']} is {width}x{height} but the json says "
                                    f"{listed[0]}x{listed[1]}; export the set again.", f"image id {entry['id']!r}")
