"""engine/paste.py: lines of one photo moved onto another as a change of brightness, and sets of such composites."""

import numpy as np
import pytest
from PIL import Image

from engine.paste import paste_lines, write_pasted_set


def _donor(size=(96, 80), colour=(200, 60, 60)):
    """A red wall with a dark vertical line 3 px wide at x = 40..42, and its mask."""
    rgb = np.empty((size[1], size[0], 3), np.uint8)
    rgb[:] = colour
    rgb[:, 40:43] = (40, 10, 10)
    mask = np.zeros((size[1], size[0]), bool)
    mask[:, 40:43] = True
    return Image.fromarray(rgb), mask


def test_a_line_darkens_the_base_where_it_lies_and_carries_no_wall_colour():
    base = Image.new("RGB", (96, 80), (150, 150, 150))
    donor, mask = _donor()
    out, pasted = paste_lines(base, donor, mask, np.random.default_rng(0))
    rgb = np.asarray(out).astype(int)
    assert out.size == base.size and pasted.shape == (80, 96)
    cols = np.flatnonzero(pasted.any(0))
    assert len(cols) == 3 and cols[0] in (40, 53)  # flipped left-right or not: the line stays a 3 px column
    line = rgb[:, cols[1]]
    assert (line < 60).all()  # the line's darkening (about 0.2 of its wall) moved over
    assert (np.abs(line[:, 0] - line[:, 2]) <= 2).all()  # grey stays grey: the donor's red is not carried
    far = rgb[:, (cols[1] + 20) % 96]
    assert (far == 150).all()  # away from the line the base is untouched


def test_the_mask_must_match_the_donor_photo():
    donor, mask = _donor()
    with pytest.raises(ValueError, match="donor_mask"):
        paste_lines(Image.new("RGB", (96, 80)), donor, mask[:40], np.random.default_rng(0))


def test_a_set_of_composites_keeps_the_base_masks_and_is_the_same_every_time(tmp_path):
    from engine.data import open_dataset

    base = open_dataset(_labelled(tmp_path / "base", n=3, line=False))
    donor = open_dataset(_labelled(tmp_path / "donor", n=2, line=True))
    first = write_pasted_set(tmp_path / "a", base, donor, 4)
    again = write_pasted_set(tmp_path / "b", base, donor, 4)
    made = open_dataset(first)
    assert len(made) == 4
    for k in range(4):  # composite k is base photo k % 3 with its own mask
        assert np.array_equal(made.mask(k), base.mask(k % 3))
        assert (first / "images" / f"pasted_{k:04d}.jpg").read_bytes() == \
            (again / "images" / f"pasted_{k:04d}.jpg").read_bytes()
        image = np.asarray(made.image(k)).astype(int)
        assert image.min() < 100  # a line was pasted onto the plain grey photo


def test_an_incomplete_folder_is_written_again_whole(tmp_path):
    from engine.data import open_dataset

    base = open_dataset(_labelled(tmp_path / "base", n=2, line=False))
    donor = open_dataset(_labelled(tmp_path / "donor", n=2, line=True))
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "images").mkdir()
    (out / "masks" / "pasted_0000.png").write_bytes(b"truncated")  # a run stopped after one file
    write_pasted_set(out, base, donor, 3)
    assert len(open_dataset(out)) == 3 and np.array_equal(open_dataset(out).mask(0), base.mask(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "donor", "out"]  # no partial folder left


def test_a_donor_set_without_line_like_labels_is_refused(tmp_path):
    from engine.data import open_dataset

    base = open_dataset(_labelled(tmp_path / "base", n=2, line=False))
    with pytest.raises(ValueError, match="thin lines"):
        write_pasted_set(tmp_path / "out", base, base, 2)  # the base's labels are half-photo boxes


def _labelled(folder, n, line):
    """n grey 64 x 64 photos in images/ + masks/: with line, a dark 2 px line (its mask); without, a box."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        rgb = np.full((64, 64, 3), 180 + 10 * i, np.uint8)
        mask = np.zeros((64, 64), bool)
        if line:
            rgb[:, 20 + i:22 + i] = 30
            mask[:, 20 + i:22 + i] = True
        else:
            mask[:32] = True
        Image.fromarray(rgb).save(folder / "images" / f"p{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"p{i}.png")
    return folder
