"""Training views and the on-disk cache of frozen-backbone features.

When the vision tower is frozen its activations for a given image (and augmented view) never change, so
they are computed once, stored as fp16 safetensors keyed by (model, image content, view), and the decoder
trains from them: the expensive ViT forward leaves the training loop.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save

from engine.errors import TrainingStopped
from engine.fileio import atomic_write_bytes
from engine.segmenter import normalise, vision_activations
from engine.train.events import Event, PhaseEvent, StepEvent


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
        dtype = getattr(torch, self.dtype)
        tensors = {f"act{i}": a.detach().to(dtype).contiguous().cpu() for i, a in enumerate(activations)}
        tensors["mask"] = torch.from_numpy(np.asarray(mask, np.float32)).to(torch.float16)
        atomic_write_bytes(self.path(image_digest, view), save(tensors))

    def load(self, image_digest: str, view: View) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(activations as fp32 tensors (T, C), mask (S, S) fp32)."""
        tensors = load_file(self.path(image_digest, view))
        n = sum(1 for k in tensors if k.startswith("act"))
        return [tensors[f"act{i}"].float() for i in range(n)], tensors["mask"].float()


@dataclass
class CachedFeatures:
    """The cache a run trains from: K views per training image, and the text embedding of every prompt.

    digests[si][i]: content hash of set si's training item i; cond: prompt -> (D,) embedding;
    built_views / build_seconds: what this run had to compute (0 when an earlier run cached it all).
    """

    cache: FeatureCache
    views: list[View]
    digests: list[list[str]]
    cond: dict[str, torch.Tensor]
    built_views: int
    build_seconds: float


def build_feature_cache(model, tokenizer, processor, sets: Sequence, *, root, image_size: int, dtype: str,
                        views: list[View], device: torch.device, on_event: Callable[[Event], None],
                        stop: threading.Event) -> CachedFeatures:
    """Compute the vision activations of every (training image, view) not cached yet, and the prompts' embeddings.

    sets: the run's TrainSets (`.train` items with `.image_path`, `.prompts`). Reports a "caching" phase and
    one StepEvent(caching=True) per view computed; raises TrainingStopped once `stop` is set.
    """
    extract_layers = list(model.config.extract_layers)
    cache = FeatureCache(root, model_fingerprint(model, image_size), dtype)
    digests = [[file_digest(item.image_path) for item in s.train.items] for s in sets]
    todo = [(si, i, v) for si, s in enumerate(sets) for i in range(len(s.train)) for v in views
            if not cache.has(digests[si][i], v)]
    start = time.perf_counter()
    on_event(PhaseEvent("caching", f"caching features of {len(todo)} views"))
    with torch.inference_mode():
        for n, (si, i, view) in enumerate(todo):
            if stop.is_set():
                raise TrainingStopped()
            image, mask = sets[si].train[i]
            img, msk = render_view(image, mask, view, image_size)
            pv = torch.from_numpy(normalise(img[None], processor.image_mean, processor.image_std))
            acts = vision_activations(model, pv.to(device), extract_layers)
            cache.save(digests[si][i], view, [a[0] for a in acts], msk)
            on_event(StepEvent(epoch=0, step=n + 1, steps=len(todo), caching=True))
        cond = {}
        for p in dict.fromkeys(p for s in sets for p in s.prompts):
            tokens = tokenizer([p], return_tensors="pt")
            cond[p] = model.clip.get_text_features(**{k: v.to(device) for k, v in tokens.items()}).pooler_output[0]
    return CachedFeatures(cache, views, digests, cond, len(todo), time.perf_counter() - start)
