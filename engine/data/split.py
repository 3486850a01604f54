"""Splitting a set by source photo: Roboflow writes augmented copies of one photo as "NAME_jpg.rf.<hash>.jpg",
and copies of one photo in both train and valid would inflate the scores.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.data.labels import Item


def source_photo_id(name: str | os.PathLike | Item) -> str:
    """The photo a file was made from: the file name before ".rf." (Roboflow's copies), else its stem.

    "00002_jpg.rf.9fb3dca8.jpg" -> "00002_jpg"; "IMG_0042.jpg" -> "IMG_0042".
    """
    file_name = name.image_path.name if isinstance(name, Item) else Path(name).name
    head, marker, _ = file_name.partition(".rf.")
    return head if marker and head else Path(file_name).stem


def split_groups(ids: Sequence[str], fractions: Sequence[float] = (0.85, 0.15), seed: int = 0) -> list[list[int]]:
    """Split item indices into len(fractions) lists, all items with the same id in the same list.

    ids: one group id per item (e.g. source_photo_id of each file). fractions: >= 0, summing to 1; the share of
    items per split, met as closely as whole groups allow. The same ids, fractions and seed always give the same
    split (groups are shuffled with random.Random(seed) from sorted order). Each list is sorted ascending.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}.")
    groups: dict[str, list[int]] = {}
    for index, group in enumerate(ids):
        groups.setdefault(group, []).append(index)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    bounds = np.cumsum(fractions) * len(ids)
    splits: list[list[int]] = [[] for _ in fractions]
    placed = 0
    for group in order:
        members = groups[group]
        middle = placed + len(members) / 2  # the group goes where its middle item falls
        target = next((k for k, bound in enumerate(bounds) if middle < bound), len(fractions) - 1)
        splits[target].extend(members)
        placed += len(members)
    return [sorted(indices) for indices in splits]
