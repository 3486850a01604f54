"""YOLO labels (one .txt per image: polygons or boxes in fractions of the image size) and data.yaml."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import yaml

from engine.data.labels import Item, ShapeLabel, clip_normalised, fail_or_warn, image_files, is_outside, polygon_points
from engine.errors import LabelError, LabelWarning


def parse_yolo_text(text: str, path: Path, classes: frozenset[int] | None = None) -> ShapeLabel:
    """Parse a YOLO label file's text into a normalised ShapeLabel; `path` is only named in errors.

    Lines: "cls x1 y1 ... xn yn" (polygon, n >= 3) or "cls cx cy w h" (box), values fractions of the image
    size; blank lines ignored; an empty file is an image without objects. Coordinates within
    COORDINATE_TOLERANCE of [0, 1] are clipped, others raise. classes: class ids to keep (None: all).
    Raises LabelError naming `path` and the line.
    """
    polygons: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        class_id = _parse_class_id(tokens[0], path, number)
        values = _parse_numbers(tokens[1:], path, number)
        if len(values) == 4:
            shape = _yolo_box(values, path, number)
        else:
            shape = clip_normalised(polygon_points(values, path, number), path, number)
        if classes is None or class_id in classes:
            (boxes if isinstance(shape, tuple) else polygons).append(shape)
    return ShapeLabel(tuple(polygons), tuple(boxes), normalised=True, source=path)


def _parse_class_id(token: str, path: Path, number: int) -> int:
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value < 0:
        raise LabelError(path, f"class id {token!r} is not a whole number >= 0; a line is 'class x1 y1 x2 y2 ...'.",
                         number)
    return int(value)


def _parse_numbers(tokens: list[str], path: Path, number: int) -> list[float]:
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise LabelError(path, f"non-numeric value {token!r}; coordinates must be numbers.", number) from None
        if not math.isfinite(value):
            raise LabelError(path, f"value {token!r} is not a finite number.", number)
        values.append(value)
    return values


def _yolo_box(values: list[float], path: Path, number: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = values
    if w < 0 or h < 0:
        raise LabelError(path, f"box width and height must be >= 0, got {w:g} x {h:g}.", number)
    # A zero-width or zero-height box (Roboflow leaves these where a crop cut an object away) covers no pixel.
    corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
    (x0, y0), (x1, y1) = clip_normalised(corners, path, number)
    return float(x0), float(y0), float(x1), float(y1)


def yolo_class_filter(folder: Path, categories: tuple | None) -> frozenset[int] | None:
    """Class ids to keep; names are looked up in the data.yaml next to or above `folder`."""
    if categories is None:
        return None
    names: list[str] = []
    for yaml_path in (folder / "data.yaml", folder.parent / "data.yaml"):
        if yaml_path.is_file():
            raw = load_data_yaml(yaml_path).get("names") or []
            names = [str(raw[k]) for k in sorted(raw)] if isinstance(raw, dict) else [str(n) for n in raw]
            break
    ids = set()
    for category in categories:
        if isinstance(category, (int, np.integer)):
            ids.add(int(category))
        elif category in names:
            ids.add(names.index(category))
        else:
            known = ", ".join(names) or "none (no data.yaml with names:)"
            raise ValueError(f"Unknown category {category!r} for {folder}; known names: {known}.")
    return frozenset(ids)


def yolo_items(folder: Path, skip_bad: bool, classes: frozenset[int] | None) -> tuple[list[Item], list[ShapeLabel]]:
    images_dir, labels_dir = folder / "images", folder / "labels"
    label_files = {p.stem: p for p in labels_dir.iterdir()
                   if p.is_file() and p.suffix.lower() == ".txt" and not p.name.startswith(".")}
    for label_path in label_files.values():
        if is_outside(label_path, folder):
            raise LabelError(label_path.relative_to(folder.parent), "is a link to a file outside the data set's "
                                                                   "folder; copy the file itself into the folder.")
    items, labels, seen = [], [], set()
    for image_path in image_files(images_dir, folder):
        stem = image_path.stem
        label_path = label_files.get(stem)
        try:
            if stem in seen:
                raise LabelError(image_path, f"another image is also named {stem!r}; YOLO pairs images and labels "
                                             "by name, rename one of them.")
            if label_path is None:
                raise LabelError(image_path, f"no label file {labels_dir / (stem + '.txt')}; add an empty .txt "
                                             "for a photo without objects.")
            label = parse_yolo_text(_read_text(label_path), label_path, classes)
        except LabelError as error:
            fail_or_warn(error, skip_bad)
            continue
        finally:
            seen.add(stem)
        items.append(Item(image_path, label_path, stem))
        labels.append(label)
    orphans = sorted(set(label_files) - seen)
    if orphans:
        warnings.warn(f"{labels_dir}: {len(orphans)} label file(s) without an image are ignored "
                      f"(e.g. {', '.join(o + '.txt' for o in orphans[:3])}).", LabelWarning, stacklevel=4)
    return items, labels


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(path, f"not UTF-8 text ({exc.reason}); is this really a label file?") from exc


def load_data_yaml(yaml_path: Path) -> dict:
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LabelError(yaml_path, f"not valid YAML ({exc}); fix it or delete it.") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise LabelError(yaml_path, "must be a mapping with train:, val: and names: entries.")
    return config
