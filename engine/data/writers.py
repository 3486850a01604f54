"""A label set (`engine.data.labelset`) written out in the formats other tools read.

    zip_label_set   the set as it is: one images/ + masks/ folder per prompt and labelset.json. The Train tab's
                    upload, `--data` (unzipped) and `open_dataset` read it.
    write_coco      COCO instance segmentation (`_annotations.coco.json` beside images/, Roboflow's layout):
                    one category per prompt, one annotation per connected region, as RLE (exact) or polygons.
    write_yolo      YOLOv8-seg (data.yaml + train/images + train/labels): one class per prompt, a polygon line
                    per region.

COCO and YOLO have no "not labelled for this class": a photo's absent mark for a prompt and a photo never
labelled for it both come out as a photo without that class. Polygons trace each region's outer edge (holes
and one-pixel details are lost); RLE keeps every pixel. Each writer returns the path of a zip in `out_dir`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from engine.data.labels import read_mask_file
from engine.data.labelset import MANIFEST, is_label_set, label_set_splits, set_summary
from engine.images import image_size
from engine.masks import prompt_slug

__all__ = ["zip_label_set", "write_coco", "write_yolo", "rle_counts", "mask_polygons"]

_EIGHT = np.ones((3, 3), bool)  # 8-connected regions, as engine.measure counts them


def zip_label_set(folder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`<set name>.zip` in out_dir: the set's manifest and prompt folders under one `<set name>/` folder."""
    folder = _checked(folder)
    target = Path(out_dir) / f"{folder.name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(folder / MANIFEST, f"{folder.name}/{MANIFEST}")
        for sub, _ in label_set_splits(folder):
            for path in sorted(p for p in sub.rglob("*") if p.is_file() and not p.is_symlink()):
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of an (H, W) bool mask: run lengths in column-major order, a run of 0s first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def mask_polygons(mask: np.ndarray, tolerance: float = 1.0) -> list[np.ndarray]:
    """The outer edge of each 8-connected region as an (N, 2) array of (x, y) pixel corners, N >= 3,
    simplified to within `tolerance` px. Regions too small to make a polygon come out as their pixel box."""
    labels, count = ndimage.label(np.asarray(mask, bool), structure=_EIGHT)
    out = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[box] == index
        padded = np.pad(region, 1)
        contours = find_contours(padded.astype(float), 0.5)
        if contours:
            ring = max(contours, key=len)
            ring = approximate_polygon(ring, tolerance) if tolerance > 0 else ring
            points = ring[:, ::-1] - 1 + (box[1].start, box[0].start)  # (row, col) -> (x, y), back from padding
            points = np.clip(points + 0.5, 0, None)  # pixel centres -> the pixel grid's corners
        else:
            points = np.empty((0, 2))
        if len(np.unique(points.round(3), axis=0)) < 3:  # a lone pixel or a line: its box
            y0, x0, y1, x1 = box[0].start, box[1].start, box[0].stop, box[1].stop
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
        out.append(points.astype(float))
    return out


def write_coco(folder: str | os.PathLike, out_dir: str | os.PathLike, *, polygons: bool = False) -> Path:
    """`<set>-coco.zip`: images/ and `_annotations.coco.json` (RLE, or polygons with `polygons`)."""
    folder = _checked(folder)
    photos, categories = _photos(folder)
    images, annotations = [], []
    for image_id, (name, (path, masks)) in enumerate(sorted(photos.items()), start=1):
        width, height = image_size(path)
        images.append({"id": image_id, "file_name": f"images/{name}", "width": width, "height": height})
        for prompt, mask in masks.items():
            labels, _ = ndimage.label(mask, structure=_EIGHT)
            for index, box in enumerate(ndimage.find_objects(labels), start=1):
                region = labels == index
                ys, xs = box
                entry = {"id": len(annotations) + 1, "image_id": image_id, "category_id": categories[prompt],
                         "area": int(region.sum()), "iscrowd": 0,
                         "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]}
                if polygons:
                    entry["segmentation"] = [[round(float(v), 2) for v in ring.ravel()]
                                             for ring in mask_polygons(region)]
                else:
                    entry["segmentation"] = {"size": [height, width], "counts": rle_counts(region)}
                annotations.append(entry)
    coco = {"info": {"description": f"Drywall QA label set {folder.name}"},
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": p, "supercategory": "wall"} for p, i in categories.items()]}
    target = Path(out_dir) / f"{folder.name}-coco{'-polygons' if polygons else ''}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder.name}/_annotations.coco.json", json.dumps(coco))
        for name, (path, _) in sorted(photos.items()):
            archive.write(path, f"{folder.name}/images/{name}")
    return target


def write_yolo(folder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`<set>-yolo.zip`: a YOLOv8-seg export (data.yaml; train/images, train/labels), one class per prompt."""
    folder = _checked(folder)
    photos, categories = _photos(folder)
    names = list(categories)
    target = Path(out_dir) / f"{folder.name}-yolo.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        yaml_text = (f"train: train/images\nval: train/images\nnc: {len(names)}\n"
                     f"names: {json.dumps(names)}\n")
        archive.writestr(f"{folder.name}/data.yaml", yaml_text)
        for name, (path, masks) in sorted(photos.items()):
            width, height = image_size(path)
            lines = []
            for prompt, mask in masks.items():
                for ring in mask_polygons(mask):
                    coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in ring)
                    lines.append(f"{names.index(prompt)} {coords}")
            archive.write(path, f"{folder.name}/train/images/{name}")
            archive.writestr(f"{folder.name}/train/labels/{Path(name).stem}.txt", "\n".join(lines) + "\n" * bool(lines))
    return target


def _checked(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not is_label_set(folder):
        raise ValueError(f"{folder.name} is not a label set (no {MANIFEST}); save a mask to it first.")
    return folder


def _photos(folder: Path) -> tuple[dict[str, tuple[Path, dict[str, np.ndarray]]], dict[str, int]]:
    """photo file name -> (its path in the set, {prompt: mask} of its non-empty masks); prompt -> category id."""
    summary = set_summary(folder)
    categories = {prompt: i for i, prompt in enumerate(summary.prompts, start=1)}
    photos: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    for entry in summary.entries:
        sub = folder / prompt_slug(entry.prompt)
        path = sub / "images" / entry.photo
        _, masks = photos.setdefault(entry.photo, (path, {}))
        if not entry.absent:
            masks[entry.prompt] = read_mask_file(sub / "masks" / f"{Path(entry.photo).stem}.png")
    return photos, categories
