"""Mask files: one single-channel PNG per (image, prompt), values 0 and 255 only, written atomically.

File names are `{image_id}__{prompt_slug}.png`, e.g. "IMG_0042__segment_taping_area.png", so a folder of masks
sorts by image and names its prompt in plain words.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from engine.fileio import atomic_write_bytes

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def prompt_slug(prompt: str) -> str:
    """A file-name-safe form of a prompt: lower case, runs of other characters -> "_", ends trimmed.

    "segment taping area" -> "segment_taping_area"; "segment joint/tape" -> "segment_joint_tape";
    "  Segment  CRACK!! " -> "segment_crack"; accents are dropped ("fissuré" -> "fissure").
    Raises ValueError when nothing of the prompt is left (e.g. "", "!!!").
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}.")
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = _NON_ALNUM.sub("_", ascii_text.lower()).strip("_")
    if not slug:
        raise ValueError(f"Prompt {prompt!r} has no letters or digits to name a mask file with; type a word.")
    return slug


def mask_filename(image_id: str, prompt: str) -> str:
    """`{image_id}__{prompt_slug(prompt)}.png`. image_id must be a plain file stem (no folder separators)."""
    if not image_id or "/" in image_id or "\\" in image_id or image_id in (".", ".."):
        raise ValueError(f"image_id {image_id!r} must be a non-empty file stem without '/' or '\\'.")
    return f"{image_id}__{prompt_slug(prompt)}.png"


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A mask as (H, W) uint8 with values {0, 255}.

    mask: (H, W) array, either bool, or numbers whose values are all in {0, 1} or all in {0, 255}.
    Raises ValueError for another number of dimensions, an empty array, or other values (a probability map
    must be thresholded first, e.g. `probs > 0.5`).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(
            f"A mask must be a 2-D (H, W) array, got shape {mask.shape}; take one channel or one prompt's mask."
        )
    if mask.dtype == np.bool_:
        return mask.view(np.uint8) * np.uint8(255)  # one uint8 copy (a 12240 px photo's mask is 150 MB)
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise ValueError(f"A mask must be bool or numeric, got dtype {mask.dtype}.")
    values = np.unique(mask)
    if np.isin(values, (0, 1)).all():
        return (mask != 0).astype(np.uint8) * 255
    if np.isin(values, (0, 255)).all():
        return (mask != 0).astype(np.uint8) * 255
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise ValueError(
        f"A mask must hold only {{0, 1}} or {{0, 255}}, got values {shown}; threshold it first (e.g. probs > 0.5)."
    )


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """PNG bytes of a mask: mode "L" (8-bit, one channel), values 0 and 255 only, same (H, W)."""
    buffer = io.BytesIO()
    Image.fromarray(mask_to_uint8(mask)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_mask(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write `mask` (see mask_to_uint8) as a PNG at `path`, atomically; returns the path.

    The PNG is written to a temporary file in the same folder, fsynced and renamed over `path`
    (engine.fileio.atomic_write_bytes), so a reader never sees half a file. Missing parent folders are created.
    """
    return atomic_write_bytes(Path(path), mask_to_png_bytes(mask))


def write_masks(masks: Mapping[str, np.ndarray], image_id: str, out_dir: str | os.PathLike) -> list[Path]:
    """Save one PNG per prompt as `out_dir / mask_filename(image_id, prompt)`; paths in the order of `masks`.

    masks: prompt -> (H, W) mask (see mask_to_uint8); all masks of one image must have the same (H, W).
    Raises ValueError before writing anything when a mask is invalid, two prompts give the same file name
    ("crack" and "Crack!"), or the masks differ in size.
    """
    out_dir = Path(out_dir)
    shapes = {prompt: np.shape(mask) for prompt, mask in masks.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Masks of one image must share its size, got {shapes}.")
    names = mask_names(image_id, masks)
    encoded = {names[prompt]: mask_to_png_bytes(mask) for prompt, mask in masks.items()}  # validate all first
    return [atomic_write_bytes(out_dir / name, data) for name, data in encoded.items()]


def mask_names(image_id: str, prompts: Iterable[str]) -> dict[str, str]:
    """{prompt: mask_filename(image_id, prompt)}; ValueError, before anything is written, when two prompts give
    the same file name ("crack" and "Crack!")."""
    names: dict[str, str] = {}
    for prompt in prompts:
        name = mask_filename(image_id, prompt)
        other = next((q for q, n in names.items() if n == name), None)
        if other is not None:
            raise ValueError(f"Prompts {other!r} and {prompt!r} both map to {name}; drop one or reword it.")
        names[prompt] = name
    return names
