"""engine/synth.py: deterministic, masks present and where the picture shows them; examples/ is in shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.synth import make_wall, write_examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _lum(image):
    return np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def test_deterministic_per_seed():
    im1, m1 = make_wall(7, (160, 120))
    im2, m2 = make_wall(7, (160, 120))
    im3, _ = make_wall(8, (160, 120))
    assert im1.tobytes() == im2.tobytes()
    for key in ("crack", "taping area"):
        np.testing.assert_array_equal(m1[key], m2[key])
    assert im1.tobytes() != im3.tobytes()


def test_shapes_and_masks():
    image, masks = make_wall(3, (200, 300), cracks=2, joints=1)  # portrait: (W, H) = (200, 300)
    assert image.mode == "RGB" and image.size == (200, 300)
    assert set(masks) == {"crack", "taping area"}
    for mask in masks.values():
        assert mask.shape == (300, 200) and mask.dtype == bool
    assert 0 < masks["crack"].mean() < 0.05  # thin
    assert 0.03 < masks["taping area"].mean() < 0.6  # a band


@pytest.mark.parametrize("seed", range(5))
def test_masks_match_the_picture(seed):
    image, masks = make_wall(seed, (320, 240), cracks=1, joints=1, lighting=False)
    lum = _lum(image)
    crack, tape = masks["crack"], masks["taping area"]
    assert crack.any() and tape.any()
    board = ~crack & ~tape
    assert lum[crack].mean() < lum[board].mean() - 25  # cracks are dark
    assert lum[tape & ~crack].mean() > lum[board].mean() + 2  # joint compound is whiter than paper


def test_nothing_asked_nothing_there():
    _, masks = make_wall(1, (128, 96), cracks=0, joints=0)
    assert not masks["crack"].any() and not masks["taping area"].any()
    with pytest.raises(ValueError, match="too small"):
        make_wall(1, (8, 8))


def test_write_examples(tmp_path):
    paths = write_examples(tmp_path, n=2)
    assert [p.name for p in paths] == ["wall_01_crack.jpg", "wall_02_taping.jpg"]
    prompts = json.loads((tmp_path / "prompts.json").read_text())
    assert prompts == {"wall_01_crack.jpg": ["segment crack"], "wall_02_taping.jpg": ["segment taping area"]}


def test_committed_examples():
    prompts = json.loads((EXAMPLES / "prompts.json").read_text())
    assert len(prompts) == 6
    assert {tuple(v) for v in prompts.values()} == {
        ("segment crack",), ("segment taping area",), ("segment crack", "segment taping area")}
    for name in prompts:
        path = EXAMPLES / name
        assert path.is_file() and path.stat().st_size < 150_000, name


@pytest.mark.parametrize("concept, other", [("crack", "taping area"), ("taping area", "crack")])
def test_a_training_set_holds_only_its_concept(tmp_path, concept, other):
    from engine.data import open_dataset
    from engine.synth import training_wall, write_training_set

    folder = write_training_set(tmp_path / "set", concept, 3, seed=500)
    ds = open_dataset(folder, prompts=("p",))
    assert len(ds) == 3 and all(ds[i][1].any() for i in range(3))  # every wall has the concept, labelled
    for i, item in enumerate(ds.items):  # and not the other one: it is a valid negative for the other prompt
        _, masks = training_wall(concept, int(item.image_id.rsplit("_", 1)[1]))
        assert not masks[other].any() and np.array_equal(masks[concept], ds[i][1])
    stamp = sorted(p.stat().st_mtime_ns for p in (folder / "masks").iterdir())
    write_training_set(folder, concept, 3, seed=500)  # complete already: nothing rewritten
    assert sorted(p.stat().st_mtime_ns for p in (folder / "masks").iterdir()) == stamp
    with pytest.raises(ValueError, match="concept must be one of"):
        write_training_set(tmp_path / "x", "mould", 1)


@pytest.mark.parametrize("concept, other", [("crack", "taping area"), ("taping area", "crack")])
def test_mixed_training_walls_hold_both_and_label_their_own(tmp_path, concept, other):
    from engine.data import open_dataset
    from engine.synth import is_mixed_wall, training_wall, write_training_set

    folder = write_training_set(tmp_path / "set", concept, 4, mixed=2, seed=500)
    ds = open_dataset(folder, prompts=("p",))
    assert sorted(is_mixed_wall(name) for name in ds.ids) == [False, False, True, True]
    for i, name in enumerate(ds.ids):
        seed = int(name.rsplit("_", 1)[1])
        _, masks = training_wall(concept, seed, mixed=is_mixed_wall(name))
        assert masks[other].any() == is_mixed_wall(name) and np.array_equal(masks[concept], ds[i][1])
        plain, _ = training_wall(concept, seed)  # a wall without the other concept is the same either way
        if not is_mixed_wall(name):
            assert np.array_equal(np.asarray(plain), np.asarray(training_wall(concept, seed, mixed=False)[0]))
    with pytest.raises(ValueError, match="mixed must be"):
        write_training_set(tmp_path / "y", concept, 2, mixed=3)
