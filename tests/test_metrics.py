"""engine/metrics.py: hand-computed counts and scores, the empty-case conventions, the vectorised sweep."""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import (
    THRESHOLDS,
    confusion,
    dice,
    iou,
    pixel_accuracy,
    precision,
    recall,
    sweep_counts,
)

# 4x4: gt is the left half (8 px); the prediction is the top-left 3x3 block (9 px)
GT = np.zeros((4, 4), dtype=bool)
GT[:, :2] = True
PRED = np.zeros((4, 4), dtype=bool)
PRED[:3, :3] = True
# overlap: rows 0-2 x cols 0-1 = 6 px; fp: rows 0-2 col 2 = 3 px; fn: row 3 cols 0-1 = 2 px; tn = 16 - 11 = 5


def test_confusion_hand_computed():
    assert confusion(PRED, GT) == (6, 3, 2, 5)
    assert all(type(c) is int for c in confusion(PRED, GT))


def test_scores_hand_computed():
    tp, fp, fn, tn = 6, 3, 2, 5
    assert iou(tp, fp, fn) == pytest.approx(6 / 11)
    assert dice(tp, fp, fn) == pytest.approx(12 / 17)
    assert precision(tp, fp, fn) == pytest.approx(6 / 9)
    assert recall(tp, fn, fp) == pytest.approx(6 / 8)
    assert pixel_accuracy(tp, fp, fn, tn) == pytest.approx(11 / 16)


def test_empty_conventions():
    empty = np.zeros((3, 5), dtype=bool)
    tp, fp, fn, tn = confusion(empty, empty)
    assert (tp, fp, fn, tn) == (0, 0, 0, 15)
    assert iou(tp, fp, fn) == 1.0
    assert dice(tp, fp, fn) == 1.0
    assert precision(tp, fp, fn) == 1.0
    assert recall(tp, fn, fp) == 1.0
    assert pixel_accuracy(tp, fp, fn, tn) == 1.0
    # nothing predicted but something there: precision 0, not a free 1
    assert precision(0, 0, 4) == 0.0
    assert iou(0, 0, 4) == 0.0 and dice(0, 0, 4) == 0.0
    # something predicted on an empty mask: recall 0
    assert recall(0, 0, 3) == 0.0
    assert pixel_accuracy(0, 0, 0, 0) == 1.0


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="threshold probabilities first"):
        confusion(np.zeros((4, 4), np.float32), GT)


def test_thresholds():
    assert len(THRESHOLDS) == 19
    assert THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 0.95 and 0.5 in THRESHOLDS


def test_sweep_counts_equals_confusion_loop():
    rng = np.random.default_rng(0)
    prob = rng.random((64, 48)).astype(np.float32)
    prob[:4, :4] = 0.5  # values exactly on a threshold: prob >= t counts as positive
    prob[4:8, :4] = np.float32(0.05)
    prob[8:12, :4] = np.float32(0.35)  # float32(0.35) < 0.35 in float64: the map's own dtype decides
    gt = rng.random((64, 48)) < 0.3
    thresholds = np.concatenate([[0.37, 0.5], THRESHOLDS[::-1]])  # unsorted, with a duplicate
    counts = sweep_counts(prob, gt, thresholds)
    assert counts.shape == (len(thresholds), 4) and counts.dtype == np.int64
    expected = np.array([confusion(prob >= float(t), gt) for t in thresholds])
    np.testing.assert_array_equal(counts, expected)
    assert (counts.sum(axis=1) == prob.size).all()


def test_sweep_counts_hand_computed():
    prob = np.array([[0.1, 0.4], [0.6, 0.9]])
    gt = np.array([[False, True], [False, True]])
    counts = sweep_counts(prob, gt, [0.5, 0.05, 0.95])
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1], [2, 2, 0, 0], [0, 0, 2, 2]])


def test_sweep_counts_rejects_bad_input():
    gt = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        sweep_counts(np.zeros((4, 5)), gt, THRESHOLDS)
    with pytest.raises(ValueError, match="NaN"):
        sweep_counts(np.full((4, 4), np.nan), gt, THRESHOLDS)
    with pytest.raises(ValueError, match="bool"):
        sweep_counts(np.zeros((4, 4)), gt.astype(np.uint8), THRESHOLDS)
    with pytest.raises(ValueError, match="float map"):
        sweep_counts(np.zeros((4, 4), np.uint8), gt, THRESHOLDS)


def test_sweep_counts_cuts_like_the_app():
    # float32(0.35) sits just below 0.35; `prob >= 0.35` on a float32 map counts it, and so must the sweep
    prob = np.full((2, 2), 0.35, dtype=np.float32)
    gt = np.ones((2, 2), bool)
    assert sweep_counts(prob, gt, [0.35])[0, 0] == np.count_nonzero(prob >= 0.35) == 4
