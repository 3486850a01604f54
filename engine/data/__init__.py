"""Labelled data sets: photos and their ground-truth masks, from the layouts people export.

`open_dataset` reads a Roboflow YOLOv8 export (data.yaml + train/valid/test), one YOLO split folder
(images/ + labels/), COCO JSON (polygons, RLE or boxes), or images/ + masks/ folders. Every label file is
parsed when the set is opened, so a broken one fails at once with its file and line; masks are rasterised
only when asked for, at the image's own pixel size.

`split_groups` splits by source photo: Roboflow writes augmented copies of one photo as
"NAME_jpg.rf.<hash>.jpg", and copies of one photo in both train and valid would inflate the scores.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageOps

from engine.images import IMAGE_SUFFIXES, ImageError, image_size, load_image
from engine.errors import LabelError, LabelWarning

COCO_FILE_NAME = "_annotations.coco.json"  # Roboflow's COCO export: one per split folder, next to the images
# Normalised coordinates this far outside [0, 1] are an error (pixel coordinates, wrong file); closer ones are
# annotation-tool rounding and are clipped.
COORDINATE_TOLERANCE = 0.05
_SPLIT_ORDER = ("train", "valid", "val", "validation", "test")
_SPLIT_ALIASES = {"val": "valid", "valid": "val", "validation": "valid"}
_LAYOUTS = (
    "Accepted layouts: (1) YOLO: a split folder with images/ and labels/ (one .txt per image, same name), or "
    "a Roboflow YOLOv8 export root with data.yaml and train/ valid/ test/ folders of that kind; (2) COCO: a "
    f".json file, or a folder holding {COCO_FILE_NAME} next to its images; (3) masks: images/ and masks/ "
    "folders, one mask image per photo named like it (or NAME_mask.png), non-zero pixels = object."
)


@dataclass(frozen=True)
class Item:
    """One photo of a set. label_path: its YOLO .txt, mask image or COCO json (None when it has none)."""

    image_path: Path
    label_path: Path | None
    image_id: str  # the image file's stem


# ---------------------------------------------------------------------------------------------- labels


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
    covers the pixels whose centres lie inside it (at least one pixel; none for a zero-area box), so its area is w*W x h*H, rounded.
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


def decode_rle(counts: Sequence[int] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """COCO run-length encoding -> (height, width) bool mask.

    counts: run lengths over the pixels in column-major (Fortran) order, starting with a run of 0s.
    size: (height, width), COCO's order. Raises ValueError when the runs do not add up to height * width.
    """
    height, width = size
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(f"RLE runs add up to {int(runs.sum())} pixels, not {height}x{width} = {height * width}.")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape((height, width), order="F")


def rle_counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools `rleFrString`) into run lengths.

    Each run is a variable-length number in 5-bit groups (chr(48 + bits), bit 0x20 = more groups follow,
    0x10 in the last group = negative); from the third run on, the run is stored as a difference to the run
    two places back.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE string ends in the middle of a number.")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


# ----------------------------------------------------------------------------------------------- the set


class LabelledSet:
    """Photos with ground-truth masks; `set[i]` -> (RGB PIL image, (H, W) bool mask at the image's size).

    name: the data set's name (e.g. "cracks"); root: the folder holding its images; prompts: the texts a user
    would type for its class (may be empty). Works as a map-style torch Dataset.
    """

    def __init__(self, name: str, root: Path, items: Sequence[Item], labels: Sequence[ShapeLabel | MaskFileLabel],
                 prompts: Sequence[str] = ()):
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels; pass one label per item.")
        self.name, self.root = name, Path(root)
        self.items, self._labels = list(items), list(labels)
        self.prompts = tuple(prompts)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image = self.image(index)
        return image, self._labels[index].mask(*image.size)

    def __repr__(self) -> str:
        return f"LabelledSet(name={self.name!r}, root={str(self.root)!r}, items={len(self)}, prompts={self.prompts})"

    @property
    def ids(self) -> list[str]:
        """image_id of every item, in order."""
        return [item.image_id for item in self.items]

    def image(self, index: int) -> Image.Image:
        """The photo as displayed, RGB (engine.images.load_image)."""
        return load_image(self.items[index].image_path)

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool ground-truth mask at the photo's displayed size, without decoding the photo."""
        width, height = image_size(self.items[index].image_path)
        return self._labels[index].mask(width, height)

    def subset(self, indices: Iterable[int]) -> LabelledSet:
        """A set of the items at `indices` (in that order), sharing name, root and prompts."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for {self.name!r} with {len(self)} items.")
        return LabelledSet(self.name, self.root, [self.items[i] for i in indices],
                           [self._labels[i] for i in indices], self.prompts)

    def split(self, fractions: Sequence[float] = (0.85, 0.15), seed: int = 0) -> list[LabelledSet]:
        """Random subsets of about `fractions` of the items, all copies of one source photo in the same one."""
        groups = [source_photo_id(item.image_path.name) for item in self.items]
        return [self.subset(indices) for indices in split_groups(groups, fractions, seed)]


# ---------------------------------------------------------------------------------------- opening sets


def open_dataset(path: str | os.PathLike, *, split: str | None = None, prompts: Sequence[str] = (),
                 skip_bad: bool = False, name: str | None = None,
                 categories: Iterable[str | int] | None = None) -> LabelledSet:
    """Open a labelled set in any accepted layout (see module docstring); labels are validated now.

    split: for a root holding several split folders ("train", "valid", ...): which one ("val" and "valid"
        are the same). Required when there are several; not allowed for a split folder of another name.
    prompts: texts for this set's class, kept on the set. name: defaults to the data set's folder name.
    skip_bad: drop bad items with a LabelWarning instead of raising LabelError at the first one.
    categories: class names or ids to keep (YOLO: ids, or names from data.yaml; COCO: category names or ids);
        None keeps all (COCO: all but the background/super-category Roboflow adds).
    Raises LabelError for a bad label, ValueError for an unknown layout or split, FileNotFoundError if
    `path` does not exist.
    """
    path = Path(path)
    prompts = _check_prompts(prompts)
    categories = None if categories is None else tuple(categories)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; check the data set path.")
    options = dict(prompts=prompts, skip_bad=skip_bad, categories=categories)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _open_coco(path, name=name or _set_name(path.parent), **options)
        if path.suffix.lower() in (".yaml", ".yml"):
            path = path.parent
        else:
            raise ValueError(f"{path}: not a data set. {_LAYOUTS}")

    kind = split_layout(path)
    if kind is not None:
        if split is not None and not _same_split(split, path.name):
            raise ValueError(
                f"{path} is already one split folder, not a root with a {split!r} split; drop split= or pass "
                "the data set root."
            )
        return _open_split(path, kind, name=name or _set_name(path), **options)

    splits = find_splits(path)
    if not splits:
        raise ValueError(f"{path}: no data set layout found. {_LAYOUTS}")
    if split is None:
        if len(splits) > 1:
            raise ValueError(
                f"{path} holds several splits ({', '.join(splits)}); pass split='{next(iter(splits))}' or "
                "the split folder itself."
            )
        chosen = next(iter(splits))
    else:
        chosen = _match_split(path, split, splits)
    folder = splits[chosen]
    return _open_split(folder, split_layout(folder), name=name or path.name, **options)


def split_layout(folder: Path) -> str | None:
    """"coco", "yolo" or "masks" when `folder` is one split in that layout, else None."""
    if (folder / COCO_FILE_NAME).is_file():
        return "coco"
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "yolo"
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return "masks"
    return None


def find_splits(root: Path) -> dict[str, Path]:
    """Split name -> split folder under a data set root, from data.yaml and the folders that exist.

    data.yaml entries (train/val/test: "train/images", "../valid/images", ...) name split folders; an entry
    whose folder is missing here falls back to the folder that does exist (Roboflow's "../" prefixes are
    relative to another working directory). Any sub-folder in a known layout is a split too. Order: train,
    valid, test, then others by name.
    """
    found: dict[str, Path] = {}
    yaml_path = root / "data.yaml"
    if yaml_path.is_file():
        for entry in _read_data_yaml(yaml_path).values():
            folder = _yaml_split_folder(root, entry)
            if folder is not None:
                found[folder.name] = folder
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if split_layout(folder) is not None:
            found.setdefault(folder.name, folder)
    order = {name: i for i, name in enumerate(_SPLIT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _read_data_yaml(yaml_path: Path) -> dict[str, object]:
    """The split entries (train/val/test) of a data.yaml."""
    config = _load_yaml(yaml_path)
    return {key: config[key] for key in ("train", "val", "test") if config.get(key)}


def _load_yaml(yaml_path: Path) -> dict:
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LabelError(yaml_path, f"not valid YAML ({exc}); fix it or delete it.") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise LabelError(yaml_path, "must be a mapping with train:, val: and names: entries.")
    return config


def _yaml_split_folder(root: Path, entry: object) -> Path | None:
    """The existing split folder a data.yaml entry ("train/images", "../valid/images") points at, if any."""
    if not isinstance(entry, str):
        return None  # lists of folders or of .txt files: the folder scan finds the splits instead
    relative = Path(entry)
    inside = [part for part in relative.parts if part not in ("..", ".")]
    for candidate in (root.joinpath(*inside), root / relative):  # inside the root first
        folder = candidate.parent if candidate.name == "images" else candidate
        if folder.is_dir() and folder != root and split_layout(folder) is not None:
            return folder
    return None


def _match_split(root: Path, split: str, splits: dict[str, Path]) -> str:
    for candidate in (split, _SPLIT_ALIASES.get(split)):
        if candidate in splits:
            return candidate
    raise ValueError(f"{root} has no split {split!r}; pass one of: {', '.join(splits)}.")


def _same_split(split: str, folder_name: str) -> bool:
    return folder_name in (split, _SPLIT_ALIASES.get(split))


def _set_name(split_folder: Path) -> str:
    """The data set's name: the root's folder name when `split_folder` sits in a root, else its own name."""
    parent = split_folder.parent
    if (parent / "data.yaml").is_file() or split_folder.name in _SPLIT_ORDER:
        return parent.name or split_folder.name
    return split_folder.name


def _check_prompts(prompts: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(prompts, str):
        prompts = (prompts,)
    prompts = tuple(prompts)
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Prompts must be non-empty strings, got {prompt!r}.")
    return tuple(p.strip() for p in prompts)


def _open_split(folder: Path, kind: str, *, name: str, prompts: tuple[str, ...], skip_bad: bool,
                categories: tuple | None) -> LabelledSet:
    if kind == "coco":
        return _open_coco(folder / COCO_FILE_NAME, name=name, prompts=prompts, skip_bad=skip_bad,
                          categories=categories)
    if kind == "yolo":
        items, labels = _yolo_items(folder, skip_bad, _yolo_class_filter(folder, categories))
    else:
        if categories is not None:
            raise ValueError(f"{folder}: categories= applies to YOLO and COCO labels, not to mask images.")
        items, labels = _mask_folder_items(folder, skip_bad)
    return _finish(name, folder, items, labels, prompts)


def _finish(name: str, root: Path, items: list[Item], labels: list, prompts: tuple[str, ...]) -> LabelledSet:
    if not items:
        raise ValueError(f"{root}: no usable labelled images (see the warnings above for skipped ones).")
    return LabelledSet(name, root, items, labels, prompts)


def _fail_or_warn(error: Exception, skip_bad: bool) -> None:
    """Raise `error`, or with skip_bad warn that its item is skipped."""
    if not skip_bad:
        raise error
    warnings.warn(f"skipped: {error}", LabelWarning, stacklevel=4)


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder` (suffix in IMAGE_SUFFIXES, not hidden), sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------- YOLO


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
            shape = _clip_normalised(_polygon_points(values, path, number), path, number)
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


def _polygon_points(values: list[float], path: Path, where: int | str) -> np.ndarray:
    """Flat [x1, y1, x2, y2, ...] (YOLO line or COCO annotation) as (N, 2) points, N >= 3."""
    if len(values) % 2:
        raise LabelError(path, f"odd number of polygon coordinates ({len(values)}); each point needs x and y.", where)
    if len(values) < 6:
        raise LabelError(path, f"a polygon needs at least 3 points, got {len(values) // 2}.", where)
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _yolo_box(values: list[float], path: Path, number: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = values
    if w < 0 or h < 0:
        raise LabelError(path, f"box width and height must be >= 0, got {w:g} x {h:g}.", number)
    # A zero-width or zero-height box (Roboflow leaves these where a crop cut an object away) covers no pixel.
    corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
    (x0, y0), (x1, y1) = _clip_normalised(corners, path, number)
    return float(x0), float(y0), float(x1), float(y1)


def _clip_normalised(points: np.ndarray, path: Path, number: int | str) -> np.ndarray:
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


def _yolo_class_filter(folder: Path, categories: tuple | None) -> frozenset[int] | None:
    """Class ids to keep; names are looked up in the data.yaml next to or above `folder`."""
    if categories is None:
        return None
    names: list[str] = []
    for yaml_path in (folder / "data.yaml", folder.parent / "data.yaml"):
        if yaml_path.is_file():
            raw = _load_yaml(yaml_path).get("names") or []
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


def _yolo_items(folder: Path, skip_bad: bool, classes: frozenset[int] | None) -> tuple[list[Item], list[ShapeLabel]]:
    images_dir, labels_dir = folder / "images", folder / "labels"
    label_files = {p.stem: p for p in labels_dir.iterdir()
                   if p.is_file() and p.suffix.lower() == ".txt" and not p.name.startswith(".")}
    items, labels, seen = [], [], set()
    for image_path in _image_files(images_dir):
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
            _fail_or_warn(error, skip_bad)
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


# ------------------------------------------------------------------------------------------ mask folders


def _mask_folder_items(folder: Path, skip_bad: bool) -> tuple[list[Item], list[MaskFileLabel]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    masks = {}
    for mask_path in sorted(_image_files(masks_dir), key=lambda p: p.suffix.lower() != ".png"):
        masks.setdefault(mask_path.stem, mask_path)  # a .png wins when several files share the stem
    items, labels = [], []
    for image_path in _image_files(images_dir):
        stem = image_path.stem
        mask_path = masks.get(stem) or masks.get(f"{stem}_mask")
        try:
            if mask_path is None:
                raise LabelError(image_path, f"no mask in {masks_dir} named {stem}.png or {stem}_mask.png; add one "
                                             "(all zero for a photo without objects).")
            image_wh, mask_wh = image_size(image_path), image_size(mask_path)
            if image_wh != mask_wh:
                raise LabelError(mask_path, f"mask is {mask_wh[0]}x{mask_wh[1]} but its image {image_path} is "
                                            f"{image_wh[0]}x{image_wh[1]}; resize the mask to the image "
                                            "(nearest neighbour) or export both again.")
        except (LabelError, ImageError) as error:
            _fail_or_warn(error, skip_bad)
            continue
        items.append(Item(image_path, mask_path, stem))
        labels.append(MaskFileLabel(mask_path))
    return items, labels


# ------------------------------------------------------------------------------------------------- COCO


def _open_coco(json_path: Path, *, name: str, prompts: tuple[str, ...], skip_bad: bool,
               categories: tuple | None) -> LabelledSet:
    """Images listed in a COCO json (files next to it), each with the union of its selected annotations."""
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
            _fail_or_warn(error, skip_bad)
            continue
        if selected is not None and annotation.get("category_id") not in selected:
            continue
        try:
            shapes[image_id].extend(_coco_shapes(annotation, entries[image_id], json_path, where))
        except LabelError as error:
            _fail_or_warn(error, skip_bad)
            bad.add(image_id)

    items, labels = [], []
    for image_id, entry in sorted(entries.items(), key=lambda kv: kv[1]["file_name"]):
        if image_id in bad:
            continue
        image_path = json_path.parent / entry["file_name"]
        try:
            _check_coco_image(image_path, entry, json_path)
        except (LabelError, ImageError) as error:
            _fail_or_warn(error, skip_bad)
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
    return _finish(name, json_path.parent, items, labels, prompts)


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
    points = _polygon_points(_coco_numbers(part, json_path, where), json_path, where)
    return _clip_pixels(points, width, height, json_path, where)


def _clip_pixels(points: np.ndarray, width: object, height: object, json_path: Path, where: str) -> np.ndarray:
    """(N, 2) pixel (x, y) clipped to the image; LabelError when far outside (needs the json's width/height)."""
    if not isinstance(width, (int, float)) or not isinstance(height, (int, float)) or width <= 0 or height <= 0:
        return points  # no size in the json: the image's own size is checked when the set opens
    normalised = _clip_normalised(points / (width, height), json_path, where)
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
        raise LabelError(json_path, f"image {entry['file_name']} is listed but missing from {image_path.parent}; "
                                    "copy it there or remove it from the json.", f"image id {entry['id']!r}")
    width, height = image_size(image_path)
    listed = (entry.get("width"), entry.get("height"))
    if listed != (None, None) and listed != (width, height):
        raise LabelError(json_path, f"image {image_path} is {width}x{height} but the json says "
                                    f"{listed[0]}x{listed[1]}; export the set again.", f"image id {entry['id']!r}")


# ------------------------------------------------------------------------------------------- splitting


def source_photo_id(name: str | os.PathLike | Item) -> str:
    """The photo a file was made from: the file name before ".rf." (Roboflow's copies), else its stem.

    "00002_jpg.rf.9fb3dca8.jpg" -> "00002_jpg"; "IMG_0042.jpg" -> "IMG_0042".
    """
    file_name = name.image_path.name if isinstance(name, Item) else Path(name).name
    head, marker, _ = file_name.partition(".rf.")
    return head if marker and head else Path(file_name).stem


def split_groups(ids: Sequence[str], fractions: Sequence[float] = (0.85, 0.15), seed: int = 0) -> list[list[int]]:
    """Split item indices into len(fractions) lists, all items with the same id in the same list.

    ids: one group id per item (e.g. source_photo_id of each file). fractions: >= 0, summing to 1; the share of
    items per split, met as closely as whole groups allow. The same ids, fractions and seed always give the same
    split (groups are shuffled with random.Random(seed) from sorted order). Each list is sorted ascending.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}.")
    groups: dict[str, list[int]] = {}
    for index, group in enumerate(ids):
        groups.setdefault(group, []).append(index)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    bounds = np.cumsum(fractions) * len(ids)
    splits: list[list[int]] = [[] for _ in fractions]
    placed = 0
    for group in order:
        members = groups[group]
        middle = placed + len(members) / 2  # the group goes where its middle item falls
        target = next((k for k, bound in enumerate(bounds) if middle < bound), len(fractions) - 1)
        splits[target].extend(members)
        placed += len(members)
    return [sorted(indices) for indices in splits]


# ------------------------------------------------------------------------------------------------- CLI


def parse_data_arg(text: str) -> tuple[str, tuple[str, ...]]:
    """Parse the CLI form `PATH=prompt one,prompt two` into (path, prompts); `PATH` alone -> (path, ()).

    Splits at the first "="; quotes around the path or the prompt list are dropped, blank prompts ignored.
    """
    text = text.strip()
    path, equals, rest = text.partition("=")
    path = _unquote(path)
    if not path:
        raise ValueError(f"No data set path in {text!r}; write PATH or PATH=prompt1,prompt2.")
    if not equals:
        return path, ()
    prompts = tuple(p for p in (_unquote(part) for part in _unquote(rest).split(",")) if p)
    if not prompts:
        raise ValueError(f"No prompts after '=' in {text!r}; write PATH=prompt1,prompt2 or just PATH.")
    return path, prompts


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
