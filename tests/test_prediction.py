"""engine/prediction.py: presence on constructed maps, band-wise mask upsampling, found / not found, the CSV."""

import csv

import numpy as np
import pytest
from PIL import Image

import engine.prediction as prediction
from engine.prediction import (
    CSV_HEADER,
    Prediction,
    presence_score,
    resolve_thresholds,
    upsample_map,
    upsample_mask,
    write_prediction,
    write_predictions_csv,
)
from engine.segmenter import probability_maps


def test_presence_of_constructed_maps():
    assert presence_score(np.full((16, 16), 0.8)) == pytest.approx(0.8)  # fires everywhere: its value
    assert presence_score(np.zeros((16, 16))) == 0.0  # empty
    spike = np.zeros((16, 16))
    spike[8, 8] = 1.0
    assert presence_score(spike) == pytest.approx(1 / 9)  # one stray pixel is not a find
    blob = np.zeros((16, 16))
    blob[4:7, 4:7] = 0.9
    assert presence_score(blob) == pytest.approx(0.9)  # a 3 x 3 patch is
    corner = np.zeros((16, 16))
    corner[:2, :2] = 1.0
    assert presence_score(corner) == pytest.approx(1.0)  # border windows are clipped, not zero-padded


@pytest.mark.parametrize("size", [(37, 23), (500, 301), (16, 16)])
def test_upsample_mask_matches_the_full_size_maps_band_by_band(size, monkeypatch):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, 16)).astype(np.float32)
    monkeypatch.setattr(prediction, "BAND_PIXELS", 1000)  # many bands
    reference = probability_maps(logits[None], ["p"], size)["p"]
    mask = upsample_mask(logits, size, 0.5)
    assert mask.shape == (size[1], size[0]) and mask.dtype == bool
    assert np.count_nonzero(mask != (reference >= 0.5)) <= mask.size * 1e-4  # float rounding at the edge only
    assert np.abs(upsample_map(logits, size) - reference).max() < 1e-5


def _prediction(presence_threshold=0.5):
    logits = np.full((8, 8), -10.0, np.float32)
    logits[0, 0] = 10.0  # one confident pixel: presence 1/4 at a clipped corner window
    return Prediction({"p": logits}, (32, 16), {"p": 0.5}, {"p": presence_threshold}, {"p": presence_score(
        prediction.sigmoid(logits))}, ms=3.0)


def test_a_prompt_not_found_gives_an_empty_mask_unless_raw():
    pred = _prediction()
    assert pred.presence["p"] == pytest.approx(0.25, abs=1e-3) and not pred.found("p")
    assert pred.mask("p").shape == (16, 32) and not pred.mask("p").any()
    assert pred.mask("p", raw=True).any()
    assert _prediction(presence_threshold=0.2).found("p")
    assert pred.max_score("p") == pytest.approx(1.0, abs=1e-4)


def test_resolve_thresholds():
    assert resolve_thresholds(["a", "b"], 0.4, {"a": 0.6}) == {"a": 0.6, "b": 0.4}
    assert resolve_thresholds(["a", "b"], 0.4, {"a": 0.6}, override=0.3) == {"a": 0.3, "b": 0.3}
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        resolve_thresholds(["a"], 0.4, None, override=40)


def test_write_prediction_and_csv(tmp_path):
    pred = _prediction(presence_threshold=0.2)
    rows = write_prediction(pred, "wall", "photos/wall.jpg", tmp_path)
    with Image.open(tmp_path / "wall__p.png") as im:
        assert im.mode == "L" and im.size == (32, 16)
        values = np.asarray(im)
    assert set(np.unique(values)) == {0, 255}
    assert rows[0][:3] == ["photos/wall.jpg", "p", "found"]
    assert rows[0][3] == pytest.approx(100.0 * np.count_nonzero(values) / values.size, abs=1e-3)
    path = write_predictions_csv(rows, tmp_path / "predictions.csv")
    read = list(csv.reader(path.open()))
    assert read[0] == CSV_HEADER and read[1][:3] == ["photos/wall.jpg", "p", "found"] and len(read) == 2


def test_write_prediction_refuses_two_prompts_with_one_file_name(tmp_path):
    logits = np.zeros((8, 8), np.float32)
    pred = Prediction({"crack": logits, "Crack!": logits}, (16, 16), {"crack": 0.5, "Crack!": 0.5},
                      {"crack": 0.5, "Crack!": 0.5}, {"crack": 0.5, "Crack!": 0.5}, ms=1.0)
    with pytest.raises(ValueError, match="both map to wall__crack.png"):
        write_prediction(pred, "wall", "wall.jpg", tmp_path)
    assert not list(tmp_path.iterdir())  # refused before any mask was written


def test_write_prediction_measures_each_mask_in_mm_with_the_models_line_prompts(tmp_path):
    logits = {p: np.full((20, 20), -10.0, np.float32) for p in ("segment crack", "segment taping area")}
    logits["segment crack"][10, 2:18] = 10.0  # a bar one model pixel (10 photo px) high, 16 long
    logits["segment taping area"][2:6, 4:16] = 10.0
    half = {p: 0.5 for p in logits}
    pred = Prediction(logits, (200, 200), half, half, {p: 1.0 for p in logits}, ms=1.0)
    rows = write_prediction(pred, "wall", "wall.jpg", tmp_path, mm_per_px=0.2)
    crack, taping = ({c: v for c, v in zip(CSV_HEADER, row)} for row in rows)
    assert (crack["count"], crack["unit"], crack["area"]) == (1, "mm", "")
    assert crack["length"] == pytest.approx(160 * 0.2, rel=0.1) and crack["band"] == "2 slight"  # about 2 mm wide
    assert (taping["count"], taping["unit"], taping["length"]) == (1, "mm²", "")
    assert taping["area"] == pytest.approx(40 * 120 * 0.04, rel=0.15)
    # the model lists its line-like prompts: a crack prompt it leaves out is measured as an area
    rows = write_prediction(pred, "wall", "wall.jpg", tmp_path, meta={"line_prompts": []})
    assert [row[CSV_HEADER.index("length")] for row in rows] == ["", ""] and rows[0][-1] == "px²"
