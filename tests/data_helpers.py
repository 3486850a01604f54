"""Small synthetic data sets for the engine.data tests: images, YOLO split folders and COCO run lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "drywall-qa"
W, H = 64, 48  # synthetic image size


def make_image(path: Path, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


def yolo_split(folder: Path, labels: dict[str, str | None]) -> Path:
    """A YOLO split folder: one PNG per stem, and its label text (None: no label file)."""
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        make_image(folder / "images" / f"{stem}.png")
        if text is not None:
            (folder / "labels" / f"{stem}.txt").write_text(text)
    return folder


def rle_encode(mask: np.ndarray) -> list[int]:
    """COCO runs of a (H, W) bool mask: column-major, starting with a run of 0s."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat[0] else runs


def rle_string(counts: list[int]) -> str:
    """pycocotools rleToString, written out: 5-bit groups, deltas from the run two back after the second."""
    out = []
    for i, value in enumerate(counts):
        if i > 2:
            value -= counts[i - 2]
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(group + (0x20 if more else 0) + 48))
    return "".join(out)


def known_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[3:40, 50:63] = True
    mask[0, 0] = mask[H - 1, W - 1] = True  # runs at both ends
    mask[10:12, 5:45] = True  # long runs (> 31): multi-group numbers; shorter next to longer: negative deltas
    return mask
