"""engine.data.split: source photo ids and group-keeping splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data import source_photo_id, split_groups


@pytest.mark.parametrize("name,photo", [
    ("00002_jpg.rf.9fb3dca8ca9d4f494861a39eb071f64e.jpg", "00002_jpg"),
    ("/data/x/IMG_1.rf.abc.png", "IMG_1"),
    ("IMG_0042.jpg", "IMG_0042"),
    (Path("a/b/wall.photo.png"), "wall.photo"),
])
def test_source_photo_id(name, photo):
    assert source_photo_id(name) == photo


def test_split_groups_keeps_groups_and_is_deterministic():
    ids = [f"p{k}" for k in range(40) for _ in range(k % 4 + 1)]  # 40 photos, 1-4 copies each (100 items)
    splits = split_groups(ids, (0.8, 0.2), seed=3)
    assert sorted(i for s in splits for i in s) == list(range(len(ids)))
    assert [{ids[i] for i in s} for s in splits][0].isdisjoint({ids[i] for i in splits[1]})
    assert abs(len(splits[1]) - 20) <= 4
    assert split_groups(ids, (0.8, 0.2), seed=3) == splits
    assert split_groups(ids, (0.8, 0.2), seed=4) != splits
    assert [len(s) for s in split_groups(ids, (1.0,))] == [100]
    with pytest.raises(ValueError, match="sum to 1"):
        split_groups(ids, (0.8, 0.1))
