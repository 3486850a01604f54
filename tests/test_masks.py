"""engine.masks: prompt slugs, file names and the bytes of mask PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.masks import mask_filename, mask_to_png_bytes, prompt_slug, save_mask, write_masks


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("prompt,slug", [
    ("segment taping area", "segment_taping_area"),
    ("segment joint/tape", "segment_joint_tape"),
    ("  Segment  CRACK!! ", "segment_crack"),
    ("fissuré mur", "fissure_mur"),
    ("crack #2", "crack_2"),
])
def test_prompt_slug(prompt, slug):
    assert prompt_slug(prompt) == slug


@pytest.mark.parametrize("prompt", ["", "   ", "!!!", "/"])
def test_prompt_slug_rejects_empty(prompt):
    with pytest.raises(ValueError, match="no letters or digits"):
        prompt_slug(prompt)


def test_mask_filename():
    assert mask_filename("IMG_0042", "segment joint/tape") == "IMG_0042__segment_joint_tape.png"
    with pytest.raises(ValueError, match="file stem"):
        mask_filename("../etc", "crack")


ROW = np.array([[0, 1, 1, 0]])


@pytest.mark.parametrize("mask", [
    ROW.astype(bool), ROW.astype(np.uint8), ROW.astype(np.int64), ROW.astype(np.float32),
    (ROW * 255).astype(np.uint8), (ROW * 255).astype(np.int32),
])
def test_png_is_single_channel_0_255(mask):
    image = _decode(mask_to_png_bytes(mask))
    assert image.format == "PNG" and image.mode == "L" and image.size == (4, 1)
    assert np.asarray(image).tolist() == [[0, 255, 255, 0]]


def test_png_keeps_shape_and_pixels():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.5
    decoded = np.asarray(_decode(mask_to_png_bytes(mask)))
    assert decoded.shape == (37, 53) and decoded.dtype == np.uint8
    assert np.array_equal(decoded == 255, mask) and set(np.unique(decoded)) == {0, 255}
    assert np.asarray(_decode(mask_to_png_bytes(np.zeros((2, 3), bool)))).max() == 0


@pytest.mark.parametrize("mask,match", [
    (np.zeros((2, 3, 1), bool), r"2-D \(H, W\).*shape \(2, 3, 1\)"),
    (np.zeros(5, bool), "2-D"),
    (np.zeros((0, 4), bool), "2-D"),
    (np.array([[0, 1, 255]], np.uint8), "only {0, 1} or {0, 255}.*0, 1, 255"),
    (np.array([[0.2, 0.9]]), "threshold it first"),
])
def test_bad_masks_are_rejected(mask, match):
    with pytest.raises(ValueError, match=match):
        mask_to_png_bytes(mask)


def test_save_mask_atomic_and_overwrites(tmp_path):
    path = tmp_path / "out" / "deep" / "a__crack.png"
    mask = np.eye(4, dtype=bool)
    assert save_mask(mask, path) == path
    assert path.read_bytes() == mask_to_png_bytes(mask)
    save_mask(~mask, path)
    assert np.array_equal(np.asarray(_decode(path.read_bytes())) == 255, ~mask)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a__crack.png"]  # no temporary file left


def test_save_mask_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        save_mask(np.zeros((2, 2, 2)), tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


def test_write_masks(tmp_path):
    crack = np.zeros((6, 8), bool)
    crack[2, 1:7] = True
    tape = np.zeros((6, 8), np.uint8)
    tape[:, 4] = 255
    paths = write_masks({"segment crack": crack, "segment joint/tape": tape}, "IMG_1", tmp_path)
    assert [p.name for p in paths] == ["IMG_1__segment_crack.png", "IMG_1__segment_joint_tape.png"]
    assert np.array_equal(np.asarray(Image.open(paths[0])) > 0, crack)
    assert np.array_equal(np.asarray(Image.open(paths[1])), tape)


def test_write_masks_refuses_before_writing(tmp_path):
    good = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="both map to IMG_1__crack.png"):
        write_masks({"crack": good, "Crack!": good}, "IMG_1", tmp_path)
    with pytest.raises(ValueError, match="share its size"):
        write_masks({"crack": good, "tape": np.zeros((4, 5), bool)}, "IMG_1", tmp_path)
    with pytest.raises(ValueError, match="threshold"):
        write_masks({"crack": good, "tape": np.full((4, 4), 0.3)}, "IMG_1", tmp_path)
    assert list(tmp_path.iterdir()) == []
