"""Segmentation metrics as small pure functions over numpy arrays.

Everything here works from the four confusion counts of a binary mask, so the evaluation loop, the
training loop and the tests share one definition. A pixel is predicted positive when ``prob >= threshold``.

Conventions for empty cases (chosen so that a correct "nothing here" answer scores as perfect):

- IoU and Dice are 1 when the union is empty (no ground truth and no prediction), else 0 when tp == 0.
- Precision with no predicted pixels is 1 if the ground truth is empty too, else 0.
- Recall with no ground-truth pixels is 1 if nothing was predicted either, else 0.
- Pixel accuracy of a zero-pixel image is 1.
"""

from __future__ import annotations

import numpy as np

#: Thresholds swept in evaluation: 0.05, 0.10, ..., 0.95 (19 values, float64).
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """Confusion counts of a binary prediction against a binary ground truth.

    Args:
        pred: (H, W) bool, the predicted mask.
        gt: (H, W) bool, the ground-truth mask; same shape as ``pred``.

    Returns:
        (tp, fp, fn, tn) as Python ints; they sum to ``pred.size``.

    Raises:
        ValueError: if the shapes differ or either array is not bool.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {pred.shape} != ground-truth shape {gt.shape}; "
            "resize the prediction to the mask's (H, W) before scoring"
        )
    for name, arr in (("pred", pred), ("gt", gt)):
        if arr.dtype != np.bool_:
            raise ValueError(
                f"{name} must be a bool mask, got dtype {arr.dtype}; "
                "threshold probabilities first (prob >= threshold) or use mask.astype(bool)"
            )
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    tn = int(pred.size) - tp - fp - fn
    return tp, fp, fn, tn


def iou(tp: int, fp: int, fn: int) -> float:
    """Intersection over union, tp / (tp + fp + fn), in [0, 1]; 1.0 when the union is empty."""
    union = tp + fp + fn
    return 1.0 if union == 0 else float(tp / union)


def dice(tp: int, fp: int, fn: int) -> float:
    """Dice / F1, 2 tp / (2 tp + fp + fn), in [0, 1]; 1.0 when the union is empty."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else float(2 * tp / denom)


def precision(tp: int, fp: int, fn: int = 0) -> float:
    """Precision, tp / (tp + fp), in [0, 1].

    With no predicted pixels (tp + fp == 0) it is 1 if the ground truth is empty too (``fn == 0``),
    else 0: predicting nothing is only right when there is nothing. ``fn`` is read only in that case;
    pass it to get this convention (leaving it at 0 scores an empty prediction as correct).
    """
    predicted = tp + fp
    if predicted == 0:
        return 1.0 if fn == 0 else 0.0
    return float(tp / predicted)


def recall(tp: int, fn: int, fp: int = 0) -> float:
    """Recall, tp / (tp + fn), in [0, 1].

    With no ground-truth pixels (tp + fn == 0) it is 1 if nothing was predicted either (``fp == 0``),
    else 0, mirroring :func:`precision`. ``fp`` is read only in that case.
    """
    actual = tp + fn
    if actual == 0:
        return 1.0 if fp == 0 else 0.0
    return float(tp / actual)


def pixel_accuracy(tp: int, fp: int, fn: int, tn: int) -> float:
    """Fraction of pixels classified correctly, (tp + tn) / total, in [0, 1]; 1.0 for zero pixels."""
    total = tp + fp + fn + tn
    return 1.0 if total == 0 else float((tp + tn) / total)


def sweep_counts(prob: np.ndarray, gt: np.ndarray, thresholds) -> np.ndarray:
    """Confusion counts at many thresholds, sharing one split of the pixels into gt / non-gt.

    Equals ``[confusion(prob >= float(t), gt) for t in thresholds]``: the compare runs in the map's own
    dtype, as ``Segmenter.masks`` does, so a float32 map is cut exactly where the app cuts it.
    The pixels are split once by ``gt``; each threshold is then one SIMD compare-and-count over each part
    (about 3 ms for 640x640 and 20 thresholds on one CPU core). A histogram via ``np.searchsorted`` was
    measured 4x slower: numpy's binary search is not vectorised, while the compares are.

    Args:
        prob: (H, W) float probabilities, usually in [0, 1]; must not contain NaN.
        gt: (H, W) bool ground truth, same shape as ``prob``.
        thresholds: (T,) floats, any order; duplicates allowed.

    Returns:
        (T, 4) int64 array; row i is (tp, fp, fn, tn) at ``thresholds[i]``.

    Raises:
        ValueError: on a shape mismatch, a non-bool ``gt``, a non-float ``prob``, NaN in ``prob`` or
            non-1-D thresholds.
    """
    prob = np.asarray(prob)
    gt = np.asarray(gt)
    thr = np.asarray(thresholds, dtype=np.float64)
    if prob.shape != gt.shape:
        raise ValueError(
            f"probability map shape {prob.shape} != ground-truth shape {gt.shape}; "
            "resize the prediction to the mask's (H, W) before scoring"
        )
    if gt.dtype != np.bool_:
        raise ValueError(f"gt must be a bool mask, got dtype {gt.dtype}; use mask.astype(bool)")
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"prob must be a float map, got dtype {prob.dtype}; e.g. prob.astype(np.float32) / 255")
    if thr.ndim != 1:
        raise ValueError(f"thresholds must be a 1-D sequence, got shape {thr.shape}")
    if np.isnan(prob).any():
        raise ValueError("probability map contains NaN; check the model output (e.g. a sigmoid of inf - inf)")

    pos = prob[gt]  # (n_pos,) the ground-truth pixels
    neg = prob[~gt]  # (n_neg,) the rest
    cuts = thr.astype(prob.dtype)  # what `prob >= python_float` compares against (NEP 50)
    tp = np.array([np.count_nonzero(pos >= t) for t in cuts], dtype=np.int64)
    fp = np.array([np.count_nonzero(neg >= t) for t in cuts], dtype=np.int64)
    return np.stack([tp, fp, pos.size - tp, neg.size - fp], axis=1)
