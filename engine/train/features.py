"""Training views and the on-disk cache of frozen-backbone features.

When the vision tower is frozen its activations for a given image (and augmented view) never change, so
they are computed once, stored as fp16 safetensors keyed by (model, image content, view), and the decoder
trains from them: the expensive ViT forward leaves the training loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class View:
    """One augmented view: horizontal flip, number of 90° turns, crop box as fractions (x0, y0, x1, y1)."""

    flip: bool = False
    turns: int = 0
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @property
    def key(self) -> str:
        return f"f{int(self.flip)}r{self.turns}c" + "-".join(f"{c:.3f}" for c in self.crop)


IDENTITY = View()


def random_view(rng: np.random.Generator, min_crop: float = 0.6) -> View:
    """A random flip / 90° turn / square-ish crop covering min_crop..1 of each side."""
    side = rng.uniform(min_crop, 1.0)
    x0, y0 = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
    return View(flip=bool(rng.integers(2)), turns=int(rng.integers(4)), crop=(x0, y0, x0 + side, y0 + side))


def cached_views(k: int, seed: int) -> list[View]:
    """The K views cached per image: the identity first, then K-1 random views (the same for every image)."""
    rng = np.random.default_rng(seed)
    return [IDENTITY] + [random_view(rng) for _ in range(k - 1)]


def render_view(image: Image.Image, mask: np.ndarray, view: View, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply a view to (image, mask) and resize to size x size.

    image: RGB PIL (W, H); mask: bool (H, W). Returns (uint8 (S, S, 3), float32 (S, S) in [0, 1]); the mask is
    resized bilinearly, so its edge pixels carry the covered fraction.
    """
    w, h = image.size
    box = (round(view.crop[0] * w), round(view.crop[1] * h), round(view.crop[2] * w), round(view.crop[3] * h))
    m = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    if box != (0, 0, w, h):
        image, m = image.crop(box), m.crop(box)
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    m = m.resize((size, size), Image.Resampling.BILINEAR)
    img, msk = np.asarray(image), np.asarray(m, dtype=np.float32) / 255
    if view.flip:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if view.turns:
        img, msk = np.rot90(img, view.turns), np.rot90(msk, view.turns)
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def model_fingerprint(model, image_size: int) -> str:
    """A short hash of the frozen weights the cached features depend on (vision tower) and the input size."""
    h = hashlib.sha256(f"size={image_size};layers={list(model.config.extract_layers)}".encode())
    for name, tensor in sorted(model.clip.vision_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


class FeatureCache:
    """Vision activations per (image content, view) under `root/<model fingerprint>/`, fp16 by default."""

    def __init__(self, root, fingerprint: str, dtype: str = "float16"):
        self.dir = Path(root) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype

    def path(self, image_digest: str, view: View) -> Path:
        return self.dir / f"{image_digest}_{hashlib.sha1(view.key.encode()).hexdigest()[:10]}.safetensors"

    def has(self, image_digest: str, view: View) -> bool:
        return self.path(image_digest, view).is_file()

    def save(self, image_digest: str, view: View, activations: list, mask: np.ndarray) -> None:
        """activations: per extract layer (T, C) tensors; mask: float32 (S, S) target of this view."""
        import torch
        from safetensors.torch import save

        from engine.fileio import atomic_write_bytes

        dtype = getattr(torch, self.dtype)
        tensors = {f"act{i}": a.detach().to(dtype).contiguous().cpu() for i, a in enumerate(activations)}
        tensors["mask"] = torch.from_numpy(np.asarray(mask, np.float32)).to(torch.float16)
        atomic_write_bytes(self.path(image_digest, view), save(tensors))

    def load(self, image_digest: str, view: View) -> tuple[list, "torch.Tensor"]:
        """(activations as fp32 tensors (T, C), mask (S, S) fp32)."""
        from safetensors.torch import load_file

        tensors = load_file(self.path(image_digest, view))
        n = sum(1 for k in tensors if k.startswith("act"))
        return [tensors[f"act{i}"].float() for i in range(n)], tensors["mask"].float()
