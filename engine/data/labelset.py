"""A label set: the photos a user corrected in the app, with one mask per prompt, kept as training data.

One folder per set, one mask-folder split (`engine.data.maskdir`) per prompt, and a manifest:

    my-walls/
      labelset.json                 what each mask is: prompt, absent mark, proposing model, corrected or not
      segment_crack/images/wall-07-3f2a9c1b0d.jpg
      segment_crack/masks/wall-07-3f2a9c1b0d.png         0/255 at the photo's full size
      segment_taping_area/images/wall-07-3f2a9c1b0d.jpg  the same photo again: each split stands alone
      segment_taping_area/masks/wall-07-3f2a9c1b0d.png

Why this layout: every prompt folder is an images/ + masks/ split that `open_dataset` (and any tool that
reads mask folders) opens as it is, a zip of the folder is a training upload, and a photo may hold several
prompts. An absent mark ("not in this photo") is an all-zero mask: training reads it as a negative for that
prompt, the way every mask-folder set marks a photo without the object. The manifest adds what the folders
cannot say (the prompt's exact text, which masks are absent marks, who proposed them); nothing needs it to
open the set. A photo's name is its own stem plus a hash of its bytes, so saving the same photo again
replaces its mask rather than adding a copy.

Pure file-system and numpy code: no gradio, no torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import ImageError
from engine.fileio import atomic_write_bytes, atomic_write_json
from engine.images import image_size, load_image
from engine.masks import mask_to_png_bytes, prompt_slug

__all__ = ["MANIFEST", "LabelEntry", "SetSummary", "check_set_name", "is_label_set", "label_set_splits",
           "save_label", "set_summary", "list_sets", "delete_label", "read_mask", "photo_id"]

MANIFEST = "labelset.json"
FORMAT = "drywall-qa label set"
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COPIED = {"JPEG": ".jpg", "PNG": ".png"}  # photos kept byte for byte; any other kind is saved as PNG
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class LabelEntry:
    """One mask of a set: `photo` (file name in the prompt's images/), its prompt, and how it was made.

    absent: the prompt's concept is not in the photo (an all-zero mask); model: the model that proposed the
    mask ("" when drawn from an empty mask); corrected: the user changed the proposal before saving.
    """

    photo: str
    prompt: str
    absent: bool = False
    corrected: bool = False
    model: str = ""
    pixels: int = 0  # object pixels in the mask
    saved: str = ""  # UTC time, ISO 8601


@dataclass
class SetSummary:
    """What a set holds: per prompt, its photos and how many of them are absent marks."""

    name: str
    entries: list[LabelEntry] = field(default_factory=list)

    @property
    def photos(self) -> int:
        """Distinct photos in the set (a photo labelled for two prompts counts once)."""
        return len({e.photo for e in self.entries})

    @property
    def prompts(self) -> dict[str, tuple[int, int]]:
        """prompt -> (masks, absent marks among them), in the order prompts were first saved."""
        counts: dict[str, list[int]] = {}
        for e in self.entries:
            c = counts.setdefault(e.prompt, [0, 0])
            c[0] += 1
            c[1] += e.absent
        return {p: (n, absent) for p, (n, absent) in counts.items()}

    def text(self) -> str:
        """One line a person reads: "my-walls: 3 photos; segment crack 3 (1 absent)"."""
        per = "; ".join(f"{p} {n}" + (f" ({a} absent)" if a else "") for p, (n, a) in self.prompts.items())
        photos = f"{self.photos} photo" + ("s" if self.photos != 1 else "")
        return f"{self.name}: {photos}" + (f"; {per}" if per else "")


def check_set_name(name: str | None) -> str:
    """`name` stripped, or ValueError saying what a set name may hold."""
    text = (name or "").strip()
    if not _SET_NAME.fullmatch(text):
        raise ValueError(f"Set name {text!r}: use letters, digits, '.', '_' and '-' (at most 64), starting with a "
                         "letter or digit, e.g. 'my-walls'.")
    return text


def is_label_set(folder: str | os.PathLike) -> bool:
    """True when `folder` is a label set (holds labelset.json)."""
    return (Path(folder) / MANIFEST).is_file()


def label_set_splits(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """(prompt folder, prompt) for each prompt of a label set, in manifest order: each folder opens with
    `open_dataset` as a one-prompt set. Prompt folders without a manifest entry are named by their folder."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    out, seen = [], set()
    for prompt in manifest["prompts"]:
        sub = folder / prompt_slug(prompt)
        if (sub / "masks").is_dir() and sub.name not in seen:
            out.append((sub, prompt))
            seen.add(sub.name)
    return out


def photo_id(photo: str | os.PathLike, name: str | None = None) -> str:
    """A photo's file stem in a set: its own stem (letters, digits, '-', at most 40) and 10 hex digits of a
    hash of its bytes. name: the name the user knows it by (an upload's original name)."""
    digest = hashlib.sha256(Path(photo).read_bytes()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(name or photo).stem).strip("-")[:40] or "photo"
    return f"{stem}-{digest}"


def read_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A mask given as a file (PNG, non-zero = object) or an array, as (H, W) bool at `size` (W, H).

    A mask of another size with the photo's shape (a copy painted on the downscaled overlay) is resized
    with nearest neighbour; a mask of another shape is refused, naming both sizes.
    """
    width, height = size
    if isinstance(mask, (str, os.PathLike)):
        try:
            with Image.open(mask) as img:
                if img.size[0] * img.size[1] > width * height:  # judged from the header, before decoding
                    raise ValueError(f"The mask is {img.size[0]}x{img.size[1]}, larger than the photo "
                                     f"({width}x{height}); send it at the photo's size.")
                img.load()
                array = np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "L"))
        except (OSError, ValueError) as exc:
            raise ImageError(f"The mask file could not be read as an image ({exc}); send a PNG, 0 = background, "
                             "255 = object.") from None
        if array.ndim == 3:  # a painted layer: where it is opaque, or else where it is not black
            alpha = array[..., 3]
            array = alpha if alpha.min() < 255 else array[..., :3].max(axis=2)
    else:
        array = np.asarray(mask)
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        raise ValueError(f"A mask is one (height, width) plane, not an array of shape {array.shape}.")
    binary = array > 0
    if binary.shape == (height, width):
        return binary
    h, w = binary.shape
    if abs(w / h - width / height) > 0.02 * width / height + 1 / min(h, w):
        raise ValueError(f"The mask is {w}x{h} but the photo is {width}x{height}: paint the mask on the photo "
                         "itself (its size, or a copy of the same shape).")
    resized = Image.fromarray(binary.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
    return np.asarray(resized) > 0


def save_label(sets_dir: str | os.PathLike, set_name: str, photo: str | os.PathLike, prompt: str, mask=None, *,
               photo_name: str | None = None, model: str = "", corrected: bool = True,
               max_photos: int | None = None, max_sets: int | None = None) -> SetSummary:
    """Keep `photo` with its `mask` for `prompt` in the set `set_name` under `sets_dir`; returns the set's summary.

    mask: a PNG path or an array (non-zero = object), at the photo's size or the same shape smaller
        (`read_mask`); None or all zero: an absent mark. Saving the same photo for the same prompt again
        replaces the mask. photo_name: the name the user knows the photo by (for its file name).
    max_photos: photos a set may hold; max_sets: sets `sets_dir` may hold (None: no cap). A save over a
        cap is refused with ValueError before anything is written.
    Raises ImageError for a photo that cannot be read, ValueError for a bad name, prompt or mask.
    """
    name = check_set_name(set_name)
    prompt = " ".join(str(prompt or "").split())
    if not prompt:
        raise ValueError("Which prompt is this mask for? Type one, e.g. 'segment crack'.")
    slug = prompt_slug(prompt)
    photo = Path(photo)
    width, height = image_size(photo)  # the size as displayed (EXIF turned), refused when not an image
    binary = np.zeros((height, width), bool) if mask is None else read_mask(mask, (width, height))
    folder = Path(sets_dir) / name
    with _lock(folder):
        if not folder.exists() and max_sets is not None:
            existing = [p for p in Path(sets_dir).glob("*") if is_label_set(p)]
            if len(existing) >= max_sets:
                raise ValueError(f"You have {len(existing)} sets, the most allowed here ({max_sets}, DQA_MAX_SETS); "
                                 "add to one of them or delete one.")
        manifest = _read_manifest(folder) if folder.exists() else _new_manifest(name)
        stem = photo_id(photo, photo_name)
        photos = {Path(e["photo"]).stem for e in manifest["items"]}
        if stem not in photos and max_photos is not None and len(photos) >= max_photos:
            raise ValueError(f"Set {name!r} holds {len(photos)} photos, the most a set may hold here ({max_photos}, "
                             "DQA_MAX_SET_PHOTOS); start another set or delete some photos.")
        # "Segment crack" after "segment crack": one prompt folder, so one text, the first one saved
        prompt = next((p for p in manifest["prompts"] if prompt_slug(p) == slug), prompt)
        images, masks = folder / slug / "images", folder / slug / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        photo_file = _keep_photo(photo, images, stem)
        atomic_write_bytes(masks / f"{stem}.png", mask_to_png_bytes(binary))
        entry = LabelEntry(photo_file.name, prompt, absent=not binary.any(), corrected=bool(corrected),
                           model=str(model or ""), pixels=int(binary.sum()),
                           saved=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        items = [e for e in manifest["items"]
                 if not (Path(e["photo"]).stem == stem and prompt_slug(e["prompt"]) == slug)]
        manifest["items"] = [*items, entry.__dict__]
        if prompt not in manifest["prompts"]:
            manifest["prompts"].append(prompt)
        atomic_write_json(folder / MANIFEST, manifest)
        return _summary(name, manifest)


def delete_label(sets_dir: str | os.PathLike, set_name: str, photo: str, prompt: str | None = None) -> SetSummary:
    """Remove a photo's mask for `prompt` (None: for every prompt) from a set; a set left empty is deleted.

    photo: the photo's file name or stem in the set. Raises ValueError when the set or the photo is unknown.
    """
    name = check_set_name(set_name)
    folder = Path(sets_dir) / name
    with _lock(folder):
        manifest = _read_manifest(folder)
        stem = Path(str(photo)).stem
        doomed = [e for e in manifest["items"] if Path(e["photo"]).stem == stem
                  and (prompt is None or prompt_slug(e["prompt"]) == prompt_slug(prompt))]
        if not doomed:
            raise ValueError(f"Set {name!r} has no photo {photo!r}" + (f" for {prompt!r}" if prompt else "") + ".")
        for e in doomed:
            sub = folder / prompt_slug(e["prompt"])
            (sub / "images" / e["photo"]).unlink(missing_ok=True)
            (sub / "masks" / f"{stem}.png").unlink(missing_ok=True)
        manifest["items"] = [e for e in manifest["items"] if e not in doomed]
        kept = {prompt_slug(e["prompt"]) for e in manifest["items"]}
        for p in [p for p in manifest["prompts"] if prompt_slug(p) not in kept]:
            manifest["prompts"].remove(p)
            shutil.rmtree(folder / prompt_slug(p), ignore_errors=True)
        if not manifest["items"]:
            shutil.rmtree(folder, ignore_errors=True)
            return SetSummary(name)
        atomic_write_json(folder / MANIFEST, manifest)
        return _summary(name, manifest)


def set_summary(folder: str | os.PathLike) -> SetSummary:
    """The summary of the set in `folder` (ValueError when it is not a label set)."""
    folder = Path(folder)
    return _summary(folder.name, _read_manifest(folder))


def list_sets(sets_dir: str | os.PathLike) -> list[SetSummary]:
    """Every label set under `sets_dir`, by name."""
    root = Path(sets_dir)
    if not root.is_dir():
        return []
    return [set_summary(p) for p in sorted(root.iterdir()) if p.is_dir() and is_label_set(p)]


def _lock(folder: Path) -> threading.Lock:
    """The one lock of a set's folder: two saves to one set (two tabs) never interleave their manifests."""
    key = Path(folder).resolve()
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _new_manifest(name: str) -> dict:
    return {"format": FORMAT, "version": 1, "name": name, "prompts": [], "items": []}


def _read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ValueError(f"No label set named {Path(folder).name!r}; save a mask to it first.")
    try:
        manifest = json.loads(path.read_text())
        manifest["items"] = [LabelEntry(**e).__dict__ for e in manifest.get("items", [])]
        manifest.setdefault("prompts", [])
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{MANIFEST} of set {Path(folder).name!r} cannot be read ({exc}); the masks in its "
                         "prompt folders still open as mask-folder sets.") from None
    return manifest


def _summary(name: str, manifest: dict) -> SetSummary:
    return SetSummary(name, [LabelEntry(**e) for e in manifest["items"]])


def _keep_photo(photo: Path, images: Path, stem: str) -> Path:
    """The photo in `images` as `stem` + suffix: its own bytes when it is a JPEG or PNG shown as stored (no EXIF
    turn, 8-bit RGB or grey), else the displayed RGB photo as PNG, so the mask and photo always agree in size."""
    for old in images.glob(f"{stem}.*"):
        return old  # the same bytes are already kept
    with Image.open(photo) as img:
        kind, mode, size = img.format, img.mode, img.size
    if kind in _COPIED and mode in ("RGB", "L") and size == image_size(photo):
        target = images / f"{stem}{_COPIED[kind]}"
        atomic_write_bytes(target, photo.read_bytes())
        return target
    buffer = io.BytesIO()
    load_image(photo).save(buffer, "PNG")
    target = images / f"{stem}.png"
    atomic_write_bytes(target, buffer.getvalue())
    return target

