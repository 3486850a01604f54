"""engine/draw.py: overlay blending touches exactly the masked pixels; heatmaps; figures' traces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.draw import (
    PALETTE,
    blend_heatmap,
    colour_for,
    compare_curves,
    heatmap,
    legend,
    mask_edges,
    overlay,
    side_by_side,
    synonym_groups,
    training_curves,
)


def _grey(h=20, w=30):
    return np.full((h, w, 3), 128, np.uint8)


def _masks(h=20, w=30):
    a = np.zeros((h, w), bool)
    a[2:10, 3:12] = True
    b = np.zeros((h, w), bool)
    b[12:18, 15:28] = True
    return {"segment crack": a, "segment taping area": b}


def test_palette():
    assert len(set(PALETTE)) == len(PALETTE) >= 6
    assert colour_for(0) == PALETTE[0] and colour_for(len(PALETTE)) == PALETTE[0]


def test_overlay_changes_exactly_the_masked_pixels():
    image, masks = _grey(), _masks()
    out = np.asarray(overlay(Image.fromarray(image), masks, alpha=0.5, outline=False))
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = (out != image).any(axis=-1)
    np.testing.assert_array_equal(changed, masks["segment crack"] | masks["segment taping area"])
    # 0.5 * 128 + 0.5 * colour, rounded half to even
    expected = np.rint(0.5 * 128 + 0.5 * np.array(PALETTE[1], dtype=np.float32))
    np.testing.assert_array_equal(out[15, 20], expected)


def test_overlay_outline_is_solid_colour_on_the_edge_only():
    image, masks = _grey(), _masks()
    out = np.asarray(overlay(image, masks, alpha=0.3, outline=True))
    a = masks["segment crack"]
    edge = mask_edges(a)
    assert edge.sum() == 2 * (8 + 9) - 4  # the rim of an 8 x 9 rectangle
    assert (out[edge] == PALETTE[0]).all()
    interior = a & ~edge
    assert not (out[interior] == PALETTE[0]).all(axis=-1).any()
    assert (out[~(a | masks["segment taping area"])] == 128).all()


def test_overlay_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="image's own size"):
        overlay(_grey(), {"x": np.zeros((5, 5), bool)})


def test_legend_matches_overlay_colours():
    assert legend(_masks()) == [("segment crack", "#d55e00"), ("segment taping area", "#0072b2")]


def test_heatmap():
    prob = np.linspace(0, 1, 40 * 10, dtype=np.float32).reshape(10, 40)
    im = heatmap(prob)
    arr = np.asarray(im)
    assert im.mode == "RGB" and arr.shape == (10, 40, 3) and arr.dtype == np.uint8
    assert tuple(arr[0, 0]) == (68, 1, 84)  # viridis at 0
    assert tuple(arr[-1, -1]) == (253, 231, 37)  # viridis at 1
    # perceptually ordered: brightness increases with probability
    lum = arr.reshape(-1, 3) @ np.array([0.299, 0.587, 0.114])
    assert lum[-1] > lum[len(lum) // 2] > lum[0]
    with pytest.raises(ValueError, match="NaN"):
        heatmap(np.full((2, 2), np.nan))


def test_blend_heatmap():
    image = _grey(10, 40)
    prob = np.zeros((10, 40), np.float32)
    out = np.asarray(blend_heatmap(image, prob, alpha=0.5))
    assert out.shape == (10, 40, 3)
    np.testing.assert_array_equal(out[0, 0], np.rint(0.5 * 128 + 0.5 * np.array([68, 1, 84])))
    with pytest.raises(ValueError, match="image's own size"):
        blend_heatmap(image, np.zeros((5, 5)))


def test_side_by_side():
    a = Image.new("RGB", (40, 30), "red")
    b = Image.new("RGB", (60, 60), "blue")
    out = side_by_side([a, b], ["image", "mask"], gap=8)
    # b is scaled to height 30 (width 30); 3 gaps
    assert out.width == 40 + 30 + 3 * 8
    assert out.height > 30
    arr = np.asarray(out)
    assert tuple(arr[-8 - 1, 8]) == (255, 0, 0) and tuple(arr[-8 - 1, 8 + 40 + 8]) == (0, 0, 255)
    with pytest.raises(ValueError, match="one label per image"):
        side_by_side([a], ["x", "y"])


HISTORY = [
    {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "lr": 1e-4,
     "val": {"segment crack": {"miou": 0.2, "dice": 0.3}, "segment taping area": {"miou": 0.4, "dice": 0.5}}},
    {"epoch": 2, "train_loss": 0.6, "val_loss": None, "lr": 5e-5,
     "val": {"segment crack": {"miou": 0.35, "dice": 0.45}, "segment taping area": {"miou": 0.5, "dice": 0.6}}},
]


def test_training_curves_traces():
    fig = training_curves(HISTORY, title="run")
    names = [t.name for t in fig.data]
    assert names == ["train loss", "val loss", "lr", "segment crack mIoU", "segment crack Dice",
                     "segment taping area mIoU", "segment taping area Dice"]
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["segment crack mIoU"].y) == [0.2, 0.35]
    assert list(by_name["val loss"].y) == [0.8, None]
    assert by_name["segment crack mIoU"].line.color == by_name["segment crack Dice"].line.color
    assert fig.layout.xaxis.title.text == "epoch"
    assert fig.layout.yaxis.title.text == "loss"
    assert fig.layout.yaxis2.title.text == "learning rate" and fig.data[2].xaxis == "x2"  # a panel of its own
    assert fig.layout.yaxis3.title.text == "score (validation)"


def test_one_epoch_shows_points_and_no_learning_rate_panel():
    fig = training_curves(HISTORY[:1])
    assert "lr" not in [t.name for t in fig.data]
    assert all("markers" in t.mode for t in fig.data)


def test_synonyms_with_identical_curves_draw_one_line():
    history = [{**row, "val": {**row["val"], "segment wall crack": dict(row["val"]["segment crack"])}}
               for row in HISTORY]
    assert synonym_groups(history) == [["segment crack", "segment wall crack"], ["segment taping area"]]
    names = [t.name for t in training_curves(history).data]
    assert "segment crack = segment wall crack mIoU" in names and not any(n.startswith("segment wall") for n in names)


def test_empty_history_says_so():
    for fig in (training_curves([]), compare_curves({}), compare_curves({"a": []})):
        assert len(fig.data) == 0
        assert fig.layout.annotations[0].text == "no epochs yet"


def test_compare_curves():
    other = [{"epoch": 1, "train_loss": 1.0, "lr": 1e-4, "val": {"segment crack": {"miou": 0.1, "dice": 0.2}}}]
    fig = compare_curves({"base": HISTORY, "lora": other})
    names = [t.name for t in fig.data]
    assert names == ["base · segment crack", "base · segment taping area", "lora · segment crack"]
    assert list(fig.data[2].y) == [0.1]
    assert fig.data[0].line.color != fig.data[2].line.color
    assert fig.data[0].line.dash == fig.data[2].line.dash  # same prompt, same dash


def test_overlapping_masks_both_stay_visible():
    image = _grey(40, 40)
    a = np.zeros((40, 40), bool)
    a[5:25, 5:25] = True
    b = np.zeros((40, 40), bool)
    b[15:35, 15:35] = True
    out = np.asarray(overlay(image, {"a": a, "b": b}, alpha=0.5))
    c0, c1 = np.array(colour_for(0), float), np.array(colour_for(1), float)
    # inside both: the mean of the two colours, over the photo; neither fill hides the other
    assert np.allclose(out[20, 20], np.rint(0.5 * 128 + 0.5 * (c0 + c1) / 2), atol=1)
    # a's outline runs through b's fill in a's colour; b's outline through a's fill in b's colour
    assert tuple(out[24, 20]) == colour_for(0)
    assert tuple(out[20, 15]) == colour_for(1)
    # inside one mask only: that mask's colour
    assert np.allclose(out[10, 10], np.rint(0.5 * 128 + 0.5 * c0), atol=1)
