"""Correct, keep, teach: what the Segment tab's labelling section computes (no gradio here).

    editor_value      a prompt's mask of the last answer as an editable layer over the photo
    mask_from_editor  the edited layer back to a mask at the photo's full size, and whether it was changed
    suggest           a batch's answers, least certain first: the photos most worth correcting
    set_rows          the visitor's label sets as table rows; thumbnails: a set's photos with their masks drawn

The editor shows the photo fitted into a fixed canvas (EDITOR_CANVAS). A mask saved from it
keeps the model's full-size mask wherever the user did not paint or erase, and takes the painted pixels,
scaled up, where they did: an untouched mask is saved pixel for pixel as the model made it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.labels import read_mask_file
from engine.data.labelset import SetSummary, set_summary
from engine.images import load_image
from engine.masks import prompt_slug

__all__ = ["LAYER_RGBA", "SUGGEST_HEADERS", "SET_HEADERS", "editor_value", "mask_from_editor", "model_mask",
           "suggest", "set_rows", "thumbnails"]

LAYER_RGBA = (255, 59, 48, 150)  # the mask layer's colour: red, see-through
BRUSH_COLOUR = "rgba(255, 59, 48, 0.6)"
SUGGEST_HEADERS = ["photo", "prompt", "answer", "presence", "presence threshold", "margin"]
SET_HEADERS = ["set", "photos", "prompts (masks, absent marks)"]
THUMB_SIDE = 192
EDITOR_CANVAS = (800, 600)  # the editor's fixed canvas (W, H): every photo is fitted into it


def model_mask(result, prompt: str) -> np.ndarray:
    """The last answer's full-size mask for `prompt` (all zero when it was not found or not asked)."""
    width, height = result.size or result.photo.size
    slug = prompt_slug(prompt)
    for path in result.mask_paths:
        if Path(path).stem.endswith(f"__{slug}"):
            return read_mask_file(Path(path))
    return np.zeros((height, width), bool)


def _small(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-size mask at the display size (nearest neighbour, as shown)."""
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0


def _large(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A display-size mask at the full size (W, H), nearest neighbour."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0


def _layer(mask: np.ndarray) -> Image.Image:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = LAYER_RGBA
    return Image.fromarray(rgba, "RGBA")


def _fit(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, width, height): where a photo of `size` sits, scaled to fit and centred, in the editor's canvas."""
    scale = min(EDITOR_CANVAS[0] / size[0], EDITOR_CANVAS[1] / size[1])
    width, height = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return (EDITOR_CANVAS[0] - width) // 2, (EDITOR_CANVAS[1] - height) // 2, width, height


def editor_value(result, prompt: str | None, photo: Image.Image | None = None,
                 full_size: tuple[int, int] | None = None) -> dict:
    """The ImageEditor's value: the photo, fitted into the fixed canvas (EDITOR_CANVAS), as background and
    `prompt`'s mask as its one layer, the same size. prompt None (or no `result`): an empty layer over
    `photo`, to label a photo from scratch. Background and layer always have the canvas's size: the editor
    draws a layer of another size at another scale than its background. full_size: the photo's full (W, H)
    (default: the answer's, else the photo's); its place in the canvas is the one `mask_from_editor` reads."""
    photo = (photo if photo is not None else result.photo).convert("RGB")
    full_size = full_size or (result.size if result is not None and result.size else photo.size)
    x0, y0, width, height = _fit(full_size)
    background = Image.new("RGB", EDITOR_CANVAS, (40, 40, 40))
    background.paste(photo.resize((width, height), Image.BILINEAR), (x0, y0))
    mask = np.zeros(EDITOR_CANVAS[::-1], bool)
    if result is not None and prompt is not None:
        mask[y0:y0 + height, x0:x0 + width] = _small(model_mask(result, prompt), (width, height))
    return {"background": background, "layers": [_layer(mask)], "composite": None}


def _painted(editor: dict, size: tuple[int, int]) -> np.ndarray:
    """The editor's layers as one (H, W) bool mask of the photo at `size` (W, H): where any layer is not
    transparent, inside the photo's place in the canvas."""
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    painted = np.zeros(EDITOR_CANVAS[::-1], bool)
    for layer in layers:
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(
            *layer.shape[:2], -1).max(axis=2)
        if alpha.shape != painted.shape:  # a canvas of another size: scaled onto ours
            alpha = np.asarray(Image.fromarray((alpha > 0).astype(np.uint8) * 255).resize(EDITOR_CANVAS,
                                                                                          Image.NEAREST))
        painted |= alpha > 0
    x0, y0, width, height = _fit(size)
    return _small(painted[y0:y0 + height, x0:x0 + width], (width, height))


def mask_from_editor(editor: dict, result, prompt: str | None, full_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(mask at `full_size` (W, H), corrected): the model's mask where the layer is as proposed, the painted
    pixels scaled up where it was changed. prompt None: the layer alone (labelled from an empty mask)."""
    x0, y0, width, height = _fit(full_size)
    painted = _painted(editor, full_size)
    proposed = model_mask(result, prompt) if result is not None and prompt is not None else np.zeros(
        full_size[::-1], bool)
    changed = painted != _small(proposed, (width, height))
    if not changed.any():
        return proposed, False
    full = proposed.copy()
    where = _large(changed, full_size)
    full[where] = _large(painted, full_size)[where]
    return full, True


def suggest(rows: Sequence[Sequence], limit: int = 50) -> list[list]:
    """A batch's CSV rows (engine.prediction.CSV_HEADER) as SUGGEST_HEADERS rows, least certain first.

    Certainty is the distance of the presence score from its presence threshold: an answer near the line
    between "found" and "not found" is the one most likely wrong either way (docs/app.md says how this was
    checked against the alternatives)."""
    out = []
    for row in rows:
        photo, prompt, found, _, presence, _, _, presence_thr = row[:8]
        margin = abs(float(presence) - float(presence_thr))
        out.append([photo, prompt, found, round(float(presence), 3), round(float(presence_thr), 3), round(margin, 3)])
    return sorted(out, key=lambda r: r[5])[:limit]


def set_rows(summaries: Sequence[SetSummary]) -> list[list]:
    """SET_HEADERS rows: one per set."""
    rows = []
    for s in summaries:
        per = "; ".join(f"{p}: {n}" + (f" ({a} absent)" if a else "") for p, (n, a) in s.prompts.items())
        rows.append([s.name, s.photos, per])
    return rows


def thumbnails(folder: str | os.PathLike, limit: int = 60) -> list[tuple[Image.Image, str]]:
    """A set's masks as small pictures: the photo with the mask in red, captioned "prompt · photo"."""
    folder = Path(folder)
    out = []
    for entry in reversed(set_summary(folder).entries[-limit:]):  # the newest first
        sub = folder / prompt_slug(entry.prompt)
        image = load_image(sub / "images" / entry.photo, max_side=THUMB_SIDE * 2)
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        mask = _small(read_mask_file(sub / "masks" / f"{Path(entry.photo).stem}.png"), image.size)
        picture = Image.alpha_composite(image.convert("RGBA"), _layer(mask)).convert("RGB")
        note = "absent" if entry.absent else ("corrected" if entry.corrected else "as proposed")
        out.append((picture, f"{entry.prompt} · {entry.photo} · {note}"))
    return out
