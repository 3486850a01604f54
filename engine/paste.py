"""Photos that hold two concepts, made from two real ones: the thin dark lines of a labelled photo (cracks) moved
onto another photo (a taped wall), as a change of brightness rather than as pixels.

A model fine-tuned on sets that each hold one concept learns a shortcut: every crack photo is a negative for
"segment taping area", so a crack anywhere in a photo can turn the taping answer off (the bundled model's taping
presence on the example walls 03 and 04 is 0.01 and 0.00, and 0.98 and 1.00 with their cracks filled in).
Composites in which both are present, labelled with either concept, show it photos where the two go together; they
also score a model on such photos (tools/replica_scores.py). docs/training.md has what training on them gave.

Moving pixels would carry the donor's wall colour along; moving the ratio of each pixel to its neighbourhood's
brightness carries only the line: the donor's brightness is divided by a local background (a grey-level closing,
which fills dark lines narrower than its window, then smoothed), and the base photo is multiplied by that ratio
inside the donor's (slightly widened, feathered) mask.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from engine.fileio import replace_dir

#: Smallest window (pixels at 640 px) of the closing that estimates a donor's background; a wide crack gets a
#: window twice its own width plus a margin (up to MAX_WINDOW), so the closing fills it whole.
BACKGROUND_WINDOW = 21
MAX_WINDOW = 81
#: How far (pixels) outside its label a crack's darkening is carried, for the soft shoulder labels leave out.
SHOULDER = 2


def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def paste_lines(base: Image.Image, donor: Image.Image, donor_mask: np.ndarray,
                rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """``base`` with the dark lines of ``donor`` under ``donor_mask`` moved onto it.

    The donor and its mask are resized to the base's size and flipped at random (left-right, up-down), so one
    donor gives several placements.

    Args:
        base: RGB photo that receives the lines.
        donor: RGB photo the lines come from.
        donor_mask: (H, W) bool at the donor's size: where its lines are.
        rng: draws the flips.

    Returns:
        (composite RGB image at the base's size, (H, W) bool mask of the pasted lines at the base's size).
    """
    width, height = base.size
    if donor_mask.shape != (donor.size[1], donor.size[0]):
        raise ValueError(f"donor_mask is {donor_mask.shape[::-1]} (W, H) but the donor photo is {donor.size}")
    grey = donor.convert("L").resize((width, height), Image.BILINEAR)
    mask = Image.fromarray(donor_mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
    if rng.random() < 0.5:
        grey, mask = grey.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        grey, mask = grey.transpose(Image.FLIP_TOP_BOTTOM), mask.transpose(Image.FLIP_TOP_BOTTOM)
    scale = min(width, height) / 640
    lines = np.asarray(mask) > 127
    half = float(ndimage.distance_transform_edt(lines).max()) if lines.any() else 0.0  # half the widest line
    window = _odd(min(MAX_WINDOW * scale, max(BACKGROUND_WINDOW * scale, 4 * half + 5)))
    lum = np.asarray(grey, dtype=np.float32)
    background = ndimage.gaussian_filter(ndimage.grey_closing(lum, size=(window, window)), window / 4)
    ratio = np.clip((lum + 1.0) / (background + 1.0), 0.0, 1.0)
    # the label widened by the shoulder, then feathered, weighs the darkening so no hard edge is left
    shoulder = _odd(2 * SHOULDER * scale + 1)
    weight = mask.filter(ImageFilter.MaxFilter(shoulder)).filter(ImageFilter.GaussianBlur(max(1.0, scale)))
    weight = np.asarray(weight, dtype=np.float32) / 255.0
    factor = 1.0 - weight * (1.0 - ratio)
    rgb = np.asarray(base.convert("RGB"), dtype=np.float32) * factor[..., None]
    out = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    return out, lines


#: Donor photos whose labelled lines cover this share of the photo (min, max): no near-empty labels, and no
#: blobs or boxes (a few crack labels are boxes), which are not lines.
DONOR_AREA = (0.003, 0.08)


def set_fingerprint(*parts) -> str:
    """A short hash of what a composite set is made from (photo ids, counts), naming its cache folder."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def write_pasted_set(out_dir, base, donor, n: int, *, label: str = "base", seed: int = 0, quality: int = 90) -> Path:
    """``n`` composites of :func:`paste_lines` as an images/ + masks/ labelled set of one of their concepts.

    Composite k is base photo ``k % len(base)`` (so each is used about equally) with the lines of a donor photo
    drawn by ``np.random.default_rng([seed, k])`` among those whose label covers :data:`DONOR_AREA` of the
    photo; its mask is the base photo's own (``label="base"``) or the pasted lines' (``label="lines"``): the same
    composites either way, so one folder of each scores both concepts. Skipped when the folder is already complete.

    Args:
        out_dir: folder to write (name it after what it holds, e.g. with :func:`set_fingerprint`).
        base, donor: LabelledSets (engine.data): the photos that receive lines, and the ones that give them.
        n: how many composites.

    Returns:
        ``out_dir``, ready for ``engine.data.open_dataset``.

    Raises:
        ValueError: for n < 0, an unknown label, an empty base, or no donor photo with a line-like label.
    """
    if n < 0:
        raise ValueError(f"the number of composites must be >= 0, not {n}")
    if label not in ("base", "lines"):
        raise ValueError(f"label must be 'base' (the base photo's mask) or 'lines' (the pasted ones), not {label!r}")
    out = Path(out_dir)
    if (out / "images").is_dir() and len(list((out / "masks").glob("*.png"))) == n:
        return out
    if n and not len(base):
        raise ValueError("no base photos to paste lines onto")
    areas = [float(donor.mask(i).mean()) for i in range(len(donor))]
    usable = [i for i, a in enumerate(areas) if DONOR_AREA[0] <= a <= DONOR_AREA[1]]
    if n and not usable:
        raise ValueError(f"none of the {len(donor)} donor photos has a label covering "
                         f"{DONOR_AREA[0]:.1%}-{DONOR_AREA[1]:.0%} of it (thin lines such as cracks)")
    # built beside the folder and swapped in whole (engine.fileio.replace_dir), so a run stopped half way never
    # leaves a folder that passes for complete with a truncated last file
    with replace_dir(out) as tmp:
        images, masks = tmp / "images", tmp / "masks"
        images.mkdir()
        masks.mkdir()
        for k in range(n):
            rng = np.random.default_rng([seed, k])
            photo, own = base[k % len(base)]
            line_photo, lines = donor[usable[int(rng.integers(len(usable)))]]
            composite, pasted = paste_lines(photo, line_photo, lines, rng)
            name = f"pasted_{k:04d}"
            composite.save(images / f"{name}.jpg", "JPEG", quality=quality)
            mask = own if label == "base" else pasted
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{name}.png")
    return out
