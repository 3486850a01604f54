"""Training views and the on-disk cache of frozen-backbone features.

When the vision tower is frozen its activations for a given image (and augmented view) never change, so
they are computed once, stored as fp16 safetensors keyed by (model, precision, image content, view), and the
decoder trains from them: the expensive ViT forward leaves the training loop.

The build itself runs in the precision measured faster on this machine (`cache_precision`; a bf16 copy of the
truncated tower where bf16 matmuls won, checked against fp32 on the first photo), several views per forward.
Validation photos get the same treatment in memory (`FrozenTowerSegmenter`): computed at the first epoch only.
"""

from __future__ import annotations

import copy
import hashlib
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
from engine.precision import PrecisionChoice, resolve_precision
from engine.segmenter import Segmenter, normalise, tower_activations
from engine.train.events import Event, LogEvent, PhaseEvent, StepEvent


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


def model_fingerprint(model, image_size: int, precision: str = "fp32") -> str:
    """A short hash of what cached features depend on: the frozen vision tower's weights, the input size, and the
    precision they were computed in (fp32 hashes as before precision was part of the key, so old caches stay)."""
    key = f"size={image_size};layers={list(model.config.extract_layers)}"
    h = hashlib.sha256((key + ("" if precision == "fp32" else f";precision={precision}")).encode())
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
    precision: the precision of the cache used ("fp32" or "bf16").
    """

    cache: FeatureCache
    views: list[View]
    digests: list[list[str]]
    cond: dict[str, torch.Tensor]
    built_views: int
    build_seconds: float
    precision: str = "fp32"  # what the views computed by this run were computed in


# Views per vision forward while caching: one batch of 4 ran 12% faster per view than one at a time, 8 slower
# (full-size tower, bf16, 352 px, 2 threads).
CACHE_BATCH = 4
# The fast precision's features must be this close to fp32's (relative L2 error, worst extract layer) on the
# first photo cached, or the cache is built in fp32. bf16 matmuls measured 0.21-0.27% on 6 valid photos, with
# the full-size tower (random weights, 352 px) and with the bundled model's (224 px).
AGREEMENT_TOLERANCE = 0.03


def fast_tower(model, precision: str):
    """The vision tower the cache is computed with: the model's own for fp32; for bf16 a copy, cut after the
    deepest extract layer, whose matmuls run in bf16 (the trained model itself is left untouched)."""
    vision = model.clip.vision_model
    if precision == "fp32":
        return vision
    from engine.segmenter import bf16_matmuls

    deepest = max(model.config.extract_layers)
    layers, vision.encoder.layers = vision.encoder.layers, vision.encoder.layers[: deepest + 1]
    try:
        fast = copy.deepcopy(vision)
    finally:
        vision.encoder.layers = layers
    bf16_matmuls(fast)
    return fast.eval()


def relative_error(fast: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """max over layers of ||fast - reference|| / ||reference|| (0 for identical activations)."""
    return max(float((f.float() - r).norm() / r.norm().clamp_min(1e-12)) for f, r in zip(fast, reference))


def build_feature_cache(model, tokenizer, processor, sets: Sequence, *, root, image_size: int, dtype: str,
                        views: list[View], device: torch.device, on_event: Callable[[Event], None],
                        stop: threading.Event, precision: str = "auto") -> CachedFeatures:
    """Compute the vision activations of every (training image, view) not cached yet, and the prompts' embeddings.

    sets: the run's TrainSets (`.train` items with `.image_path`, `.prompts`). precision: "auto" (the faster of
    fp32 and bf16 measured here, `engine.precision.resolve_precision`), "fp32" or "bf16"; a fast precision is
    checked against
    fp32 on the first photo and dropped if its features differ by more than AGREEMENT_TOLERANCE. Reports a
    "caching" phase, a LogEvent with the precision and why, and one StepEvent(caching=True) per view computed;
    raises TrainingStopped once `stop` is set.
    """
    extract_layers = list(model.config.extract_layers)
    digests = [[file_digest(item.image_path) for item in s.train.items] for s in sets]
    if stop.is_set():  # hashing every photo of a large set takes a while
        raise TrainingStopped("stopped while hashing the photos to cache")
    chosen = resolve_precision(precision, str(device))

    def missing(cache: FeatureCache) -> list[tuple[int, int, View]]:
        return [(si, i, v) for si, s in enumerate(sets) for i in range(len(s.train)) for v in views
                if not cache.has(digests[si][i], v)]

    def pixels(jobs) -> tuple[torch.Tensor, list[np.ndarray]]:
        rendered = [render_view(*sets[si].train[i], view, image_size) for si, i, view in jobs]
        batch = np.stack([img for img, _ in rendered])
        return torch.from_numpy(normalise(batch, processor.image_mean, processor.image_std)).to(device), \
            [msk for _, msk in rendered]

    start = time.perf_counter()
    cache = FeatureCache(root, model_fingerprint(model, image_size, chosen.precision), dtype)
    todo = missing(cache)
    tower = model.clip.vision_model
    with torch.inference_mode():
        if todo and chosen.precision != "fp32":
            tower = fast_tower(model, chosen.precision)
            pv, _ = pixels(todo[:1])
            error = relative_error(tower_activations(tower, pv, extract_layers),
                                   tower_activations(model.clip.vision_model, pv, extract_layers))
            if error <= AGREEMENT_TOLERANCE:
                reason = f"{chosen.reason}; its features are within {error:.1%} of fp32's"
            else:
                reason = f"fp32: {chosen.precision} features differed from fp32's by {error:.1%} here"
                chosen, tower = PrecisionChoice("fp32", reason), model.clip.vision_model
                cache = FeatureCache(root, model_fingerprint(model, image_size, "fp32"), dtype)
                todo = missing(cache)
            chosen = PrecisionChoice(chosen.precision, reason)
        on_event(PhaseEvent("caching", f"caching features of {len(todo)} views"))
        if todo:
            on_event(LogEvent(f"feature cache: computing {len(todo)} views ({chosen.reason})"))
        for n in range(0, len(todo), CACHE_BATCH):
            if stop.is_set():
                raise TrainingStopped("stopped while caching features")
            jobs = todo[n:n + CACHE_BATCH]
            pv, masks = pixels(jobs)
            acts = tower_activations(tower, pv, extract_layers)
            for k, ((si, i, view), msk) in enumerate(zip(jobs, masks)):
                cache.save(digests[si][i], view, [a[k] for a in acts], msk)
            on_event(StepEvent(epoch=0, step=n + len(jobs), steps=len(todo), caching=True))
        cond = {}
        for p in dict.fromkeys(p for s in sets for p in s.prompts):
            tokens = tokenizer([p], return_tensors="pt")
            cond[p] = model.clip.get_text_features(**{k: v.to(device) for k, v in tokens.items()}).pooler_output[0]
    return CachedFeatures(cache, views, digests, cond, len(todo), time.perf_counter() - start, chosen.precision)


class ActivationMemo:
    """Vision activations by pixel content, kept in memory up to `max_bytes` (then no more are added)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.bytes = max_bytes, 0
        self.items: dict[str, list[torch.Tensor]] = {}

    def get(self, pixel_values: torch.Tensor, compute: Callable[[], list]) -> list:
        key = hashlib.sha1(pixel_values.detach().cpu().numpy().tobytes()).hexdigest()
        found = self.items.get(key)
        if found is None:
            found = compute()
            size = sum(a.numel() * a.element_size() for a in found)
            if self.bytes + size <= self.max_bytes:
                self.items[key], self.bytes = found, self.bytes + size
        return found


class FrozenTowerSegmenter(Segmenter):
    """The Segmenter that validates a run whose vision tower is frozen (the cached mode).

    A photo's activations never change while the tower is frozen, so they are computed at the first epoch's
    validation and kept in `memo`; later epochs run only the decoder. The memo is keyed by the preprocessed
    pixels, so every score equals the plain Segmenter's.
    """

    def __init__(self, *args, memo: ActivationMemo, **kwargs):
        super().__init__(*args, **kwargs)
        self.memo = memo

    def vision_activations(self, pixel_values) -> list:
        return self.memo.get(pixel_values, lambda: super(FrozenTowerSegmenter, self).vision_activations(pixel_values))
