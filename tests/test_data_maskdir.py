"""engine.data.maskdir: images/ + masks/ folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.data import LabelError, LabelWarning, open_dataset
from tests.data_helpers import H, W, make_image


def test_mask_folder(tmp_path):
    folder = tmp_path / "set"
    make_image(folder / "images" / "a.jpg")
    make_image(folder / "images" / "b.jpg")
    (folder / "masks").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[5:10, 20:30] = 255
    Image.fromarray(mask).save(folder / "masks" / "a.png")
    Image.fromarray(np.stack([mask // 255] * 3, axis=-1)).save(folder / "masks" / "b_mask.png")  # RGB 0/1
    dataset = open_dataset(folder)
    assert dataset.ids == ["a", "b"]
    assert np.array_equal(dataset.mask(0), mask > 0) and np.array_equal(dataset[1][1], mask > 0)


def test_mask_of_other_size(tmp_path):
    folder = tmp_path / "set"
    make_image(folder / "images" / "a.jpg")
    make_image(folder / "images" / "b.jpg")
    (folder / "masks").mkdir()
    Image.new("L", (W, H)).save(folder / "masks" / "a.png")
    Image.new("L", (W // 2, H // 2)).save(folder / "masks" / "b.png")
    with pytest.raises(LabelError) as info:
        open_dataset(folder)
    message = str(info.value)
    assert str(folder / "masks" / "b.png") in message and str(folder / "images" / "b.jpg") in message
    assert "32x24" in message and "64x48" in message
    with pytest.warns(LabelWarning, match="mask is 32x24"):
        assert open_dataset(folder, skip_bad=True).ids == ["a"]


def test_mask_linking_outside_is_refused(tmp_path):
    folder = tmp_path / "set"
    make_image(folder / "images" / "a.jpg")
    make_image(tmp_path / "private" / "a.png")
    (folder / "masks").mkdir()
    (folder / "masks" / "a.png").symlink_to(tmp_path / "private" / "a.png")
    with pytest.raises(LabelError, match=r"set/masks/a\.png: is a link to a file outside the data set's folder"):
        open_dataset(folder, skip_bad=True)
    (folder / "masks" / "a.png").unlink()
    (folder / "masks").rmdir()
    (folder / "masks").symlink_to(tmp_path / "private")  # a masks/ folder that links out
    with pytest.raises(LabelError, match="outside the data set's folder"):
        open_dataset(folder)
