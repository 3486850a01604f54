"""What the loop trains on: the opened sets, the order of an epoch, and batches rendered from photos.

Every random choice (the epoch order, the augmented view, the colour jitter, the prompt among synonyms) is
drawn from the one `random.Random` the run owns, so a resumed run continues the same sequence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data import open_dataset
from engine.paths import in_repo
from engine.segmenter import normalise
from engine.train.config import DataSpec, TrainConfig
from engine.train.features import IDENTITY, CachedFeatures, random_view, render_view

Pair = tuple[int, int]  # (set index, item index in that set's train split)


@dataclass
class TrainSet:
    """One DataSpec opened: its train and validation splits (LabelledSet), its prompts (synonyms), and the train
    photos held out of training (cfg.holdout_share; None without). mixed: indices into train of the photos that
    hold another set's concept too (generated mixed walls, pasted composites), which are never negatives."""

    spec: DataSpec
    train: object  # LabelledSet
    val: object | None
    prompts: tuple[str, ...]
    holdout: object | None = None
    mixed: frozenset[int] = frozenset()
    # Per train photo, how much more often than the rest it is drawn as a negative (mean 1; None: all alike):
    # the photos where the starting model answers another set's prompt (cfg.hard_negatives).
    negative_weights: np.ndarray | None = None


#: The seed of the holdout split: fixed, so that every run (any seed, a fine-tune of a base) holds out the same photos.
HOLDOUT_SEED = 0


def split_holdout(train, share: float):
    """(rest, holdout) of a LabelledSet: about `share` of its photos, whole source photos, the same every time."""
    return tuple(train.split((1 - share, share), seed=HOLDOUT_SEED))


def synthetic_set(spec: DataSpec):
    """The generated walls a DataSpec asks for, written once under .cache/synthetic/ (engine.synth)."""
    from engine.synth import write_training_set

    name = f"{spec.synthetic_concept.replace(' ', '-')}-{spec.synthetic_walls}"
    name += f"-mixed-{spec.synthetic_mixed}" if spec.synthetic_mixed else ""
    folder = write_training_set(in_repo(".cache/synthetic") / name, spec.synthetic_concept, spec.synthetic_walls,
                                mixed=spec.synthetic_mixed)
    return open_dataset(folder, prompts=spec.prompts)


def open_sets(cfg: TrainConfig) -> list[TrainSet]:
    """Open every set of cfg.data; without a validation split, 15% of train is held out (by source photo).

    Raises ValueError for a set without prompts or training images, or when cfg.data is empty.
    """
    sets, real, receiving = [], [], []  # real train photos; those and the generated walls
    for spec in cfg.data:
        if not spec.prompts:
            raise ValueError(f"Data set {spec.path} has no prompts: write it as PATH=\"prompt one,prompt two\".")
        root = Path(spec.path)
        has_splits = (root / (spec.train_split or "train")).is_dir()
        own_val = spec.val_split not in (None, "none", "train")
        if has_splits:
            train = open_dataset(root, split=spec.train_split, prompts=spec.prompts, skip_bad=True)
            val = open_dataset(root, split=spec.val_split, prompts=spec.prompts, skip_bad=True) \
                if own_val and (root / spec.val_split).is_dir() else None
        else:
            train, val = open_dataset(root, prompts=spec.prompts, skip_bad=True), None
        if val is None and spec.val_split not in ("none", "train"):
            # no validation split given: hold out 15%, keeping Roboflow copies of a photo together
            train, val = train.split((0.85, 0.15), seed=cfg.seed)
        holdout = None
        if cfg.holdout_share:
            train, holdout = split_holdout(train, cfg.holdout_share)
        for limit in (spec.max_images, cfg.max_train_images):
            if limit:
                train = train.subset(range(min(len(train), limit)))
        if spec.val_split == "train":
            val = train
        real.append(train)
        receiving.append(train)
        mixed = frozenset()
        if spec.synthetic_walls:  # after the real photos, so "the first N train photos" stay real ones
            from engine.synth import is_mixed_wall

            walls = synthetic_set(spec)
            mixed = frozenset(len(train) + k for k, name in enumerate(walls.ids) if is_mixed_wall(name))
            train = train.joined(walls)
            receiving[-1] = train.subset(alternate(len(real[-1]), len(walls)))
        if cfg.max_val_images and val is not None:
            val = val.subset(range(min(len(val), cfg.max_val_images)))
        if len(train) == 0:
            raise ValueError(f"Data set {spec.path} has no training images.")
        sets.append(TrainSet(spec, train, val, tuple(spec.prompts), holdout, mixed))
    if not sets:
        raise ValueError("No training data: give at least one --data PATH=prompts.")
    for k, s in enumerate(sets):  # after every set is open: composites take the other set's train photos
        if s.spec.pasted_lines:
            bases = receiving if s.spec.pasted_on_walls else real
            if s.spec.pasted_lines_from:  # lines onto this set's photos, its own labels
                composites = pasted_set(s.spec, bases[k], _other_set(s.spec, s.spec.pasted_lines_from, cfg.data, real))
            else:  # this set's lines onto the other's photos, labelled with the lines
                composites = pasted_set(s.spec, _other_set(s.spec, s.spec.pasted_lines_onto, cfg.data, bases), real[k],
                                        label="lines")
            s.mixed = s.mixed | frozenset(range(len(s.train), len(s.train) + len(composites)))
            s.train = s.train.joined(composites)
    return sets


def alternate(n_real: int, n_walls: int) -> list[int]:
    """Indices 0 .. n_real + n_walls - 1 of real photos followed by walls, taken in turn (real, wall, real, ...)
    until one kind runs out, so that the first composites of a set take both kinds."""
    walls = range(n_real, n_real + n_walls)
    both = [i for pair in zip(range(n_real), walls) for i in pair]
    k = min(n_real, n_walls)
    return both + list(range(k, n_real)) + list(walls[k:])


def _other_set(spec: DataSpec, path: str, specs: Sequence[DataSpec], photos_of: Sequence):
    """`photos_of`'s entry for the data set at `path`, which must be another set of the run than `spec`'s."""
    for other, photos in zip(specs, photos_of):
        if other is not spec and Path(other.path) == Path(path):
            return photos
    paths = ", ".join(str(o.path) for o in specs if o is not spec) or "none"
    raise ValueError(f"Data set {spec.path}: pasted lines from or onto {path!r}, which is not another data set of "
                     f"this run (they are: {paths}).")


def pasted_set(spec: DataSpec, base, donor, label: str = "base"):
    """The composites a DataSpec asks for (engine.paste): `spec.pasted_lines` of the base set's real train photos
    with the donor set's lines, labelled with `label` ("base" or "lines"), written once under .cache/pasted/ in a
    folder named after the photos they come from."""
    from engine.paste import set_fingerprint, write_pasted_set

    key = set_fingerprint(base.ids, donor.ids, spec.pasted_lines, label)
    folder = write_pasted_set(in_repo(".cache/pasted") / f"{base.name}-{label}-{spec.pasted_lines}-{key}", base,
                              donor, spec.pasted_lines, label=label)
    return open_dataset(folder, prompts=spec.prompts)


def concept_groups(sets: Sequence[TrainSet]) -> list[list[int]]:
    """The sets' indices grouped by concept: sets that share a prompt hold the same concept (a label set's
    "segment crack" beside the shared cracks set) and are validated and calibrated as one set. In order of
    each group's first set."""
    groups: list[list[int]] = []
    for k, s in enumerate(sets):
        joined = [g for g in groups if any(set(sets[j].prompts) & set(s.prompts) for j in g)]
        merged = sorted({j for g in joined for j in g} | {k})
        groups = [g for g in groups if g not in joined] + [merged]
    return sorted(groups)


def group_prompts(sets: Sequence[TrainSet], group: Sequence[int]) -> list[str]:
    """The prompts of a concept group, each once, in the order of its sets."""
    return list(dict.fromkeys(p for k in group for p in sets[k].prompts))


def joined_split(parts: Sequence):
    """LabelledSets of one concept as one (None when there are none); the first set's name and root."""
    parts = [ds for ds in parts if ds is not None and len(ds) > 0]
    if not parts:
        return None
    out = parts[0]
    for ds in parts[1:]:
        out = out.joined(ds)
    return out


def epoch_order(sizes: Sequence[int], balance: float, rng: random.Random) -> list[Pair]:
    """(set index, item index) pairs for one epoch: each set drawn ∝ size ** balance, total = sum of sizes.

    balance 1: every item once; balance 0: the sets equally often (a small set's items repeat, a large set's
    are a random subset). Within a set every item comes once before any repeats; the pairs are shuffled.
    """
    total = sum(sizes)
    weights = np.array([n ** balance for n in sizes], dtype=float)
    counts = np.floor(weights / weights.sum() * total).astype(int)
    counts[np.argmax(weights)] += total - counts.sum()
    order = []
    for si, (n, count) in enumerate(zip(sizes, counts)):
        idx = []
        while len(idx) < count:
            chunk = list(range(n))
            rng.shuffle(chunk)
            idx.extend(chunk)
        order.extend((si, i) for i in idx[:count])
    rng.shuffle(order)
    return order


def shard(order: list[Pair], world: int, rank: int) -> list[Pair]:
    """Process `rank`'s equal share of an epoch under data parallelism (the order padded by its own start)."""
    return (order + order[: -len(order) % world])[rank::world]


def negative_rate_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The share of negatives at optimiser step `step` of `total_steps`: none before cfg.negative_start of the
    run, cfg.negative_rate after. A model trained from scratch first learns what the concepts look like; asked
    to also tell them apart from the first step, it settles on an empty mask for every prompt."""
    return cfg.negative_rate if step >= cfg.negative_start * total_steps else 0.0


MAX_NEGATIVE_RATE = 0.9  # a photo weighted up as a hard negative still shows its own concept now and then


def hard_negative_weights(areas: Sequence[float], strength: float) -> np.ndarray:
    """Per photo, its weight as a negative (mean 1): (1 - strength) + strength * area / mean area, where area is
    the share of the photo the starting model marks for another set's prompt (its false alarm). strength 0: all
    alike; 1: in proportion to the false alarm. All areas 0: all alike."""
    areas = np.asarray(areas, dtype=float)
    mean = areas.mean() if len(areas) else 0.0
    if mean <= 0:
        return np.ones(len(areas))
    return (1 - strength) + strength * areas / mean


def pick_prompt(si: int, sets: Sequence[TrainSet], negative_rate: float, rng: random.Random,
                i: int | None = None) -> tuple[str, bool]:
    """(prompt, negative) for item i of set si: one of its own synonyms, or with probability negative_rate (times
    the photo's negative weight, at most MAX_NEGATIVE_RATE or negative_rate; only with two or more sets) a
    prompt of another set, whose target is then empty: the concept asked for is absent from the photo, and the
    model must learn to answer with nothing. A set that shares a prompt with set si holds the same concept, so
    it never gives si's photos a negative; nor does a photo that holds another concept too (i in the set's
    `mixed`), nor a set whose spec says `negatives=False`."""
    if i is not None and i in sets[si].mixed or not getattr(sets[si].spec, "negatives", True):
        return rng.choice(sets[si].prompts), False
    weights = sets[si].negative_weights
    rate = negative_rate * (weights[i] if weights is not None and i is not None else 1.0)
    # A weight may raise the rate up to MAX_NEGATIVE_RATE, never past the rate asked for when that is higher.
    if negative_rate > 0 and len(sets) > 1 and rng.random() < min(rate, max(negative_rate, MAX_NEGATIVE_RATE)):
        others = [j for j in range(len(sets)) if j != si and not set(sets[j].prompts) & set(sets[si].prompts)]
        if others:
            return rng.choice(sets[rng.choice(others)].prompts), True
    return rng.choice(sets[si].prompts), False


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness / contrast / colour jitter on a uint8 (S, S, 3) image; returns uint8 (S, S, 3)."""
    x = img.astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.75, 1.25)
    x = x * rng.uniform(0.9, 1.1, size=3)
    return np.clip(x, 0, 255).astype(np.uint8)


class DecodedImages:
    """Training items decoded once per run, then kept in memory: `images(si, i)` -> (RGB PIL, bool (H, W))."""

    def __init__(self, sets: list[TrainSet]):
        self.sets = sets
        self._items: dict[Pair, tuple] = {}

    def __call__(self, si: int, i: int):
        if (si, i) not in self._items:
            self._items[(si, i)] = self.sets[si].train[i]
        return self._items[(si, i)]


@dataclass
class ImageBatch:
    """A batch rendered from photos (the plain and full ways).

    pixel_values (B, 3, S, S) float32 normalised; input_ids, attention_mask (B, L) int64, one prompt per image;
    target (B, S, S) float32 in [0, 1]; prompts: the B prompts as text.
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target: torch.Tensor
    prompts: list[str]
    soft: torch.Tensor | None = None  # (B,) bool: the target is the teacher's answer (`kept_by_teacher`)


def kept_by_teacher(si: int, prompt: str, sets: Sequence[TrainSet]) -> bool:
    """Whether item `si`'s target for `prompt` is the starting model's answer when the run has a teacher: a
    replayed photo (its set's val_split is "none") asked one of the replayed sets' prompts."""
    def replayed(s: TrainSet) -> bool:
        return getattr(s.spec, "val_split", None) == "none"

    return replayed(sets[si]) and any(prompt in s.prompts for s in sets if replayed(s))


def image_batch(pairs: Sequence[Pair], images: DecodedImages, tokenizer, processor, *, image_size: int,
                augment: bool, rng: random.Random, negative_rate: float = 0.0) -> ImageBatch:
    """Render `pairs` at image_size: a random view and colour jitter each when augment, and a random synonym,
    or (negative_rate) another set's prompt with an all-zero target (see `pick_prompt`)."""
    imgs, masks, prompts = [], [], []
    for si, i in pairs:
        image, mask = images(si, i)
        view = random_view(np.random.default_rng(rng.getrandbits(32))) if augment else IDENTITY
        img, msk = render_view(image, mask, view, image_size)
        if augment:
            img = jitter(img, np.random.default_rng(rng.getrandbits(32)))
        prompt, negative = pick_prompt(si, images.sets, negative_rate, rng, i)
        imgs.append(img)
        masks.append(np.zeros_like(msk) if negative else msk)
        prompts.append(prompt)
    pv = torch.from_numpy(normalise(np.stack(imgs), processor.image_mean, processor.image_std))
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    soft = torch.tensor([kept_by_teacher(si, p, images.sets) for (si, _), p in zip(pairs, prompts)])
    return ImageBatch(pv, tokens["input_ids"], tokens["attention_mask"], torch.from_numpy(np.stack(masks)), prompts,
                      soft)


@dataclass
class CachedBatch:
    """A batch read from the feature cache: acts, one (B, T, C) fp32 tensor per extract layer;
    cond (B, D) prompt embeddings (a random synonym per item); target (B, S, S) fp32 in [0, 1];
    prompts: the B prompts as text."""

    acts: list[torch.Tensor]
    cond: torch.Tensor
    target: torch.Tensor
    prompts: list[str]
    soft: torch.Tensor | None = None  # (B,) bool: the target is the teacher's answer (`kept_by_teacher`)

    def __len__(self) -> int:
        return len(self.prompts)

    def split(self, size: int) -> list[CachedBatch]:
        """The batch as consecutive pieces of at most `size` items."""
        return [CachedBatch([a[i:i + size] for a in self.acts], self.cond[i:i + size], self.target[i:i + size],
                            self.prompts[i:i + size], None if self.soft is None else self.soft[i:i + size])
                for i in range(0, len(self), size)]


def turn_grid(activations: Sequence[torch.Tensor], mask: torch.Tensor, flip: bool, turns: int):
    """A flip and 90° turns of cached features' token grid and of the mask, the way `render_view` turns a photo.

    activations: per layer (1 + g*g, C), the class token first, then the g x g patch tokens row by row;
    mask: (S, S). The class token is left as it is.
    """
    if not flip and not turns:
        return list(activations), mask
    out = []
    for a in activations:
        g = int(round((a.shape[0] - 1) ** 0.5))
        grid = a[1:].reshape(g, g, a.shape[1])
        if flip:
            grid = grid.flip(1)
        out.append(torch.cat([a[:1], torch.rot90(grid, turns, dims=(0, 1)).reshape(g * g, -1)]))
    if flip:
        mask = mask.flip(1)
    return out, torch.rot90(mask, turns, dims=(0, 1))


def cached_batch(pairs: Sequence[tuple[int, int]], features: CachedFeatures, sets: Sequence,
                 rng: random.Random, negative_rate: float = 0.0, grid_augment: bool = False) -> CachedBatch:
    """The cached features of `pairs` ((set index, item index)), one random cached view per item.

    A negative (negative_rate, see `pick_prompt`) reuses the photo's cached features with another
    set's prompt embedding and an all-zero target: no backbone work. grid_augment: also a random flip and
    90° turn of the view's token grid and mask (`turn_grid`), 8 variants of each view at no backbone cost.
    """
    acts, masks, conds, prompts = None, [], [], []
    for si, i in pairs:
        view = features.views[rng.randrange(len(features.views))]
        a, m = features.cache.load(features.digests[si][i], view)
        if grid_augment:
            a, m = turn_grid(a, m, flip=rng.random() < 0.5, turns=rng.randrange(4))
        acts = [[x] for x in a] if acts is None else [lst + [x] for lst, x in zip(acts, a)]
        prompt, negative = pick_prompt(si, sets, negative_rate, rng, i)
        masks.append(torch.zeros_like(m) if negative else m)
        conds.append(features.cond[prompt])
        prompts.append(prompt)
    soft = torch.tensor([kept_by_teacher(si, p, sets) for (si, _), p in zip(pairs, prompts)])
    return CachedBatch([torch.stack(a) for a in acts], torch.stack(conds), torch.stack(masks), prompts, soft)
