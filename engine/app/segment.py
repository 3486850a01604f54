"""Segment one photo into everything the Segment tab shows: overlay, heatmap, legend, table and mask files."""

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

from engine.draw import blend_heatmap, legend, overlay, side_by_side
from engine.images import load_image
from engine.masks import write_masks

__all__ = ["SegmentResult", "TABLE_HEADERS", "DISPLAY_MAX_SIDE", "example_rows", "image_id_for", "segment_photo"]

TABLE_HEADERS = ["prompt", "area %", "max score", "ms"]
DISPLAY_MAX_SIDE = 1600  # long side (px) of the images shown; the mask files keep the photo's full size


@dataclass
class SegmentResult:
    """Everything the Segment tab shows for one photo.

    photo, overlay, heatmap: RGB PIL images at display size (long side <= DISPLAY_MAX_SIDE); legend: (prompt,
    "#rrggbb") in overlay colour order; rows: [prompt, area %, max score, ms] per prompt (TABLE_HEADERS);
    mask_paths: one PNG per prompt, `{image_id}__{prompt_slug}.png`, 0/255 at the photo's full displayed size.
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


def segment_photo(segmenter, image, prompts: Sequence[str], *, threshold: float | None = None,
                  image_id: str = "photo", out_dir: str | os.PathLike) -> SegmentResult:
    """Segment one photo for several prompts: overlay, heatmap, per-prompt table and mask PNGs.

    image: a path (or anything `engine.images.load_image` reads); threshold: None for the model's own.
    Masks are written to `out_dir` at the photo's full displayed size.
    """
    t = segmenter.threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"Threshold {t} is outside [0, 1]; pick a value on the slider.")
    start = time.perf_counter()
    maps = segmenter.predict(image, prompts)
    ms = float(getattr(segmenter, "last_ms", 0.0) or (time.perf_counter() - start) * 1000)
    masks = {p: m >= t for p, m in maps.items()}
    paths = write_masks(masks, image_id, out_dir)

    photo = load_image(image, max_side=DISPLAY_MAX_SIDE)
    shown_maps = {p: resize_map(m, photo.size) for p, m in maps.items()}
    shown_masks = {p: m >= t for p, m in shown_maps.items()}
    rows = [[p, round(100.0 * float(masks[p].mean()), 2), round(float(maps[p].max()), 3), round(ms, 1)]
            for p in maps]
    heats = [blend_heatmap(photo, m) for m in shown_maps.values()]
    heat = heats[0] if len(heats) == 1 else side_by_side(heats, list(shown_maps))
    return SegmentResult(photo=photo, overlay=overlay(photo, shown_masks), heatmap=heat, legend=legend(masks),
                         rows=rows, mask_paths=paths, threshold=t, model=str(getattr(segmenter, "name", "model")),
                         ms=ms)


def example_rows(examples_dir: str | os.PathLike, default_prompts: Sequence[str]) -> list[list[str]]:
    """[photo path, prompts text (one per line)] per example .jpg, the prompts from examples/prompts.json.

    A photo that prompts.json does not name gets `default_prompts`; a folder without prompts.json, all of them.
    """
    examples_dir = Path(examples_dir)
    prompts_file = examples_dir / "prompts.json"
    prompts = json.loads(prompts_file.read_text()) if prompts_file.is_file() else {}
    return [[str(p), "\n".join(prompts.get(p.name, default_prompts))] for p in sorted(examples_dir.glob("*.jpg"))]
