"""Per-prompt evaluation of a segmenter on a labelled set.

Works with any segmenter that has ``predict(image, prompts) -> {prompt: (H, W) float map in [0, 1]}``
and a default ``threshold``, and any labelled set with ``len(ds)``, ``ds[i] -> (PIL image, (H, W) bool
mask)``, ``ds.items[i].image_id``, ``ds.name`` and ``ds.prompts``. Every prompt is scored against the
same ground-truth mask, so the report answers "which phrasing segments this class best".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from engine.metrics import THRESHOLDS, dice, iou, pixel_accuracy, precision, recall, sweep_counts


@dataclass
class PromptReport:
    """Scores of one prompt over one labelled set.

    Per-image metrics (``miou``, ``dice``, ``sweep``, ``worst``) average the image scores, an image with an
    empty mask and an empty prediction scoring 1. Pooled metrics (``pooled_iou``, ``pooled_dice``,
    ``precision``, ``recall``, ``pixel_accuracy``) count pixels over the whole set, so large masks weigh more.
    All scores are in [0, 1] and taken at ``threshold`` except ``sweep``/``best_*``.
    ``ms_per_image`` is the wall time of the single ``predict`` call per image (all prompts together)
    divided by the number of images, so it is the same for every prompt of one run.
    """

    n_images: int
    miou: float
    dice: float
    pooled_iou: float
    pooled_dice: float
    precision: float
    recall: float
    pixel_accuracy: float
    threshold: float
    best_threshold: float
    best_miou: float
    sweep: dict[float, float]  # threshold -> per-image mean IoU, over THRESHOLDS
    worst: list[tuple[str, float]]  # (image_id, IoU), lowest IoU first
    ms_per_image: float


@dataclass
class EvalReport:
    """Evaluation of several prompts on one labelled set (``dataset`` is the set's name)."""

    dataset: str
    prompts: dict[str, PromptReport]

    def to_dict(self) -> dict:
        """JSON-ready dict: ``{"dataset": str, "prompts": {prompt: {field: value}}}``.

        Sweep keys become strings with two decimals ("0.05"); ``worst`` becomes a list of
        ``{"image_id": str, "iou": float}``. All numbers are plain Python ints/floats.
        """
        prompts = {}
        for prompt, rep in self.prompts.items():
            row = asdict(rep)
            row["sweep"] = {f"{t:.2f}": float(v) for t, v in rep.sweep.items()}
            row["worst"] = [{"image_id": str(i), "iou": float(v)} for i, v in rep.worst]
            prompts[prompt] = row
        return {"dataset": self.dataset, "prompts": prompts}

    def format_table(self) -> str:
        """A plain-text table, one row per prompt: scores with 3 decimals, threshold 2, ms/img 1."""
        header = ["prompt", "n", "mIoU", "Dice", "pooled IoU", "precision", "recall", "best thr", "ms/img"]
        rows = [
            [
                prompt,
                str(r.n_images),
                f"{r.miou:.3f}",
                f"{r.dice:.3f}",
                f"{r.pooled_iou:.3f}",
                f"{r.precision:.3f}",
                f"{r.recall:.3f}",
                f"{r.best_threshold:.2f}",
                f"{r.ms_per_image:.1f}",
            ]
            for prompt, r in self.prompts.items()
        ]
        widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

        def line(cells: list[str]) -> str:
            # prompt left-aligned, numbers right-aligned
            out = [cells[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])]
            return "  ".join(out).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *(line(r) for r in rows)])


def best_threshold(sweep: dict[float, float]) -> tuple[float, float]:
    """The threshold with the highest mean IoU; ties go to the one closest to 0.5, then the lower one.

    Args:
        sweep: threshold -> mean IoU; not empty.

    Returns:
        (threshold, mean IoU).
    """
    if not sweep:
        raise ValueError("empty sweep: pass at least one threshold")
    top = max(sweep.values())
    tied = [t for t, v in sweep.items() if v >= top - 1e-12]
    t_best = min(tied, key=lambda t: (abs(t - 0.5), t))
    return float(t_best), float(sweep[t_best])


def _check_prob(prob, prompt: str, shape: tuple[int, int]) -> np.ndarray:
    """Validate one segmenter output; returns it as a float array (H, W)."""
    if prob is None:
        raise ValueError(f"segmenter returned no map for prompt {prompt!r}; predict must return one per prompt")
    prob = np.asarray(prob)
    if prob.shape != shape:
        raise ValueError(
            f"segmenter map for {prompt!r} has shape {prob.shape} but the mask is {shape}; "
            "predict must return (H, W) maps at the image's own size"
        )
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"segmenter map for {prompt!r} has dtype {prob.dtype}; expected float probabilities in [0, 1]")
    lo, hi = float(prob.min()), float(prob.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"segmenter map for {prompt!r} spans [{lo:.3g}, {hi:.3g}], outside [0, 1]; "
            "looks like logits: apply a sigmoid in predict"
        )
    return prob


def _checked_args(segmenter, dataset, prompts, threshold, k_worst) -> tuple[list[str], float]:
    """The prompts (stripped, as segmenters key their maps by the stripped prompt) and the threshold, checked."""
    prompts = [p.strip() for p in (dataset.prompts if prompts is None else prompts)]
    if not prompts or not all(prompts):
        raise ValueError(f"no prompts or an empty prompt in {prompts}; pass prompts=['segment crack', ...]")
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"duplicate prompts in {prompts}; pass each prompt once")
    if threshold is None:
        threshold = getattr(segmenter, "threshold", None)
        if threshold is None:
            raise ValueError("segmenter has no .threshold; pass threshold=... to evaluate")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is outside [0, 1]")
    if k_worst < 0:
        raise ValueError(f"k_worst must be >= 0, got {k_worst}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} is empty; nothing to evaluate")
    return prompts, threshold


@dataclass
class _Scores:
    """Counts gathered over a set: per prompt, pooled (tp, fp, fn, tn) at the operating threshold, per-image
    IoU at the operating threshold (column 0) and at each sweep threshold (columns 1..T), per-image Dice."""

    image_ids: list[str]
    pooled: dict[str, np.ndarray]
    ious: dict[str, np.ndarray]  # (n, 1 + T)
    dice: dict[str, np.ndarray]  # (n,)
    predict_s: float


def _score_images(segmenter, dataset, prompts, threshold, progress, on_image) -> _Scores:
    n = len(dataset)
    thresholds = np.concatenate([[threshold], THRESHOLDS])  # row 0: the operating threshold; rows 1..T: the sweep
    scores = _Scores([], {p: np.zeros(4, dtype=np.int64) for p in prompts},
                     {p: np.empty((n, len(thresholds))) for p in prompts}, {p: np.empty(n) for p in prompts}, 0.0)
    for i in tqdm(range(n), desc=f"eval {dataset.name}", leave=False, disable=not progress, file=sys.stderr):
        image, gt = dataset[i]
        gt = np.asarray(gt, dtype=bool)
        scores.image_ids.append(str(dataset.items[i].image_id))
        t0 = time.perf_counter()
        probs = segmenter.predict(image, prompts)
        scores.predict_s += time.perf_counter() - t0
        for p in prompts:
            prob = _check_prob(probs.get(p), p, gt.shape)
            counts = sweep_counts(prob, gt, thresholds)  # (1 + T, 4)
            scores.pooled[p] += counts[0]
            scores.ious[p][i] = [iou(*c[:3]) for c in counts]
            scores.dice[p][i] = dice(*counts[0, :3])
        if on_image is not None:
            on_image(i + 1, n)
    return scores


def _prompt_report(scores: _Scores, prompt: str, threshold: float, k_worst: int) -> PromptReport:
    tp, fp, fn, tn = (int(c) for c in scores.pooled[prompt])
    ious = scores.ious[prompt]
    n = len(ious)
    sweep = {float(t): float(m) for t, m in zip(THRESHOLDS, ious[:, 1:].mean(axis=0))}
    t_best, miou_best = best_threshold(sweep)
    order = np.argsort(ious[:, 0], kind="stable")[:k_worst]  # stable: ties keep dataset order
    return PromptReport(
        n_images=n,
        miou=float(ious[:, 0].mean()),
        dice=float(scores.dice[prompt].mean()),
        pooled_iou=iou(tp, fp, fn),
        pooled_dice=dice(tp, fp, fn),
        precision=precision(tp, fp, fn),
        recall=recall(tp, fn, fp),
        pixel_accuracy=pixel_accuracy(tp, fp, fn, tn),
        threshold=threshold,
        best_threshold=t_best,
        best_miou=miou_best,
        sweep=sweep,
        worst=[(scores.image_ids[j], float(ious[j, 0])) for j in order],
        ms_per_image=1000.0 * scores.predict_s / n,
    )


def evaluate(
    segmenter,
    dataset,
    prompts: Sequence[str] | None = None,
    *,
    threshold: float | None = None,
    k_worst: int = 5,
    progress: bool = True,
    on_image: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Score each prompt of a segmenter on every image of a labelled set.

    Args:
        segmenter: has ``predict(image, prompts) -> {prompt: (H, W) float in [0, 1]}`` and ``threshold``.
        dataset: labelled set (``len``, ``ds[i] -> (PIL RGB, (H, W) bool)``, ``items[i].image_id``, ``name``,
            ``prompts``).
        prompts: prompts to score (stripped of spaces); defaults to ``dataset.prompts``. All are predicted in
            one call per image.
        threshold: binarisation threshold in [0, 1] (pixel positive when prob >= threshold); defaults to
            ``segmenter.threshold``.
        k_worst: how many lowest-IoU images to list per prompt.
        progress: show a tqdm progress bar on stderr, cleared when done.
        on_image: called as ``on_image(done, n)`` after each image, ``done`` = 1 .. n (for UI progress).

    Returns:
        EvalReport with one PromptReport per prompt, in the given order.

    Raises:
        ValueError: empty dataset or prompt list, a bad threshold, or a segmenter output of the wrong
            shape/dtype/range.
    """
    prompts, threshold = _checked_args(segmenter, dataset, prompts, threshold, k_worst)
    scores = _score_images(segmenter, dataset, prompts, threshold, progress, on_image)
    reports = {p: _prompt_report(scores, p, threshold, k_worst) for p in prompts}
    return EvalReport(dataset=str(dataset.name), prompts=reports)
