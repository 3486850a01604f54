"""A labelled set (`LabelledSet`) and `open_dataset`, which finds the layout, the splits and data.yaml.

`open_dataset` reads a Roboflow YOLOv8 export (data.yaml + train/valid/test), one YOLO split folder
(images/ + labels/), COCO JSON (polygons, RLE or boxes), or images/ + masks/ folders. Every label file is
parsed when the set is opened, so a broken one fails at once with its file and line; masks are rasterised
only when asked for, at the image's own pixel size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.coco import COCO_FILE_NAME, coco_items
from engine.data.labels import Item, MaskFileLabel, ShapeLabel, is_absolute_name, is_outside
from engine.data.maskdir import mask_folder_items
from engine.data.split import source_photo_id, split_groups
from engine.data.yolo import load_data_yaml, yolo_class_filter, yolo_items
from engine.errors import LabelError
from engine.images import image_size, load_image
from engine.prompts import as_prompt_list

_SPLIT_ORDER = ("train", "valid", "val", "validation", "test")
_SPLIT_ALIASES = {"val": "valid", "valid": "val", "validation": "valid"}
_LAYOUTS = (
    "Accepted layouts: (1) YOLO: a split folder with images/ and labels/ (one .txt per image, same name), or "
    "a Roboflow YOLOv8 export root with data.yaml and train/ valid/ test/ folders of that kind; (2) COCO: a "
    f".json file, or a folder holding {COCO_FILE_NAME} next to its images; (3) masks: images/ and masks/ "
    "folders, one mask image per photo named like it (or NAME_mask.png), non-zero pixels = object."
)


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

    def joined(self, other: LabelledSet) -> LabelledSet:
        """This set's items followed by `other`'s, under this set's name, root and prompts."""
        return LabelledSet(self.name, self.root, self.items + other.items, self._labels + other._labels, self.prompts)

    def split(self, fractions: Sequence[float] = (0.85, 0.15), seed: int = 0) -> list[LabelledSet]:
        """Random subsets of about `fractions` of the items, all copies of one source photo in the same one."""
        groups = [source_photo_id(item.image_path.name) for item in self.items]
        return [self.subset(indices) for indices in split_groups(groups, fractions, seed)]


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
        for key, entry in _read_data_yaml(yaml_path).items():
            folder = _yaml_split_folder(root, entry, yaml_path, key)
            if folder is not None:
                found[folder.name] = folder
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if split_layout(folder) is not None and not is_outside(folder, root):  # a link elsewhere is not a split
            found.setdefault(folder.name, folder)
    order = {name: i for i, name in enumerate(_SPLIT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _read_data_yaml(yaml_path: Path) -> dict[str, object]:
    """The split entries (train/val/test) of a data.yaml."""
    config = load_data_yaml(yaml_path)
    return {key: config[key] for key in ("train", "val", "test") if config.get(key)}


def _yaml_split_folder(root: Path, entry: object, yaml_path: Path, key: str) -> Path | None:
    """The existing split folder a data.yaml entry ("train/images", "../valid/images") points at, if any.

    Only folders inside `root` are read. A relative entry is looked up inside the root, Roboflow's "../x" as
    root/x (its ".." is relative to another working directory); an absolute entry, or a link, that leads out
    of the root raises LabelError naming the entry, so the rest of the server is never read.
    """
    if not isinstance(entry, str):
        return None  # lists of folders or of .txt files: the folder scan finds the splits instead
    posix = entry.replace("\\", "/")
    if is_absolute_name(posix):
        candidates = [Path(entry)]
    else:
        relative = Path(posix)
        candidates = [root.joinpath(*(part for part in relative.parts if part not in ("..", ".")))]
        if ".." in relative.parts and not is_outside(root / relative, root):
            candidates.append(root / relative)  # "sub/../train/images": the literal path, still inside
    for candidate in candidates:  # inside the root first
        folder = candidate.parent if candidate.name == "images" else candidate
        if is_outside(folder, root):
            raise LabelError(yaml_path, f"{key}: {entry!r} points outside the data set's folder; give each split "
                                        "as a path inside it (e.g. 'train/images').")
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
    """The set's prompts, stripped and distinct (engine.prompts.as_prompt_list); none is fine."""
    if isinstance(prompts, str) and not prompts.strip() or not isinstance(prompts, str) and not prompts:
        return ()
    return tuple(as_prompt_list(prompts))


def _open_coco(json_path: Path, *, name: str, prompts: tuple[str, ...], skip_bad: bool,
               categories: tuple | None) -> LabelledSet:
    items, labels = coco_items(json_path, skip_bad, categories)
    return _finish(name, json_path.parent, items, labels, prompts)


def _open_split(folder: Path, kind: str, *, name: str, prompts: tuple[str, ...], skip_bad: bool,
                categories: tuple | None) -> LabelledSet:
    if kind == "coco":
        return _open_coco(folder / COCO_FILE_NAME, name=name, prompts=prompts, skip_bad=skip_bad,
                          categories=categories)
    if kind == "yolo":
        items, labels = yolo_items(folder, skip_bad, yolo_class_filter(folder, categories))
    else:
        if categories is not None:
            raise ValueError(f"{folder}: categories= applies to YOLO and COCO labels, not to mask images.")
        items, labels = mask_folder_items(folder, skip_bad)
    return _finish(name, folder, items, labels, prompts)


def _finish(name: str, root: Path, items: list[Item], labels: list, prompts: tuple[str, ...]) -> LabelledSet:
    if not items:
        raise ValueError(f"{root}: no usable labelled images (see the warnings above for skipped ones).")
    return LabelledSet(name, root, items, labels, prompts)
