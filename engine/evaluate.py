"""Per-prompt evaluation of a segmenter on labelled sets, with absent concepts.

Works with any segmenter that has ``predict(image, prompts) -> {prompt: (H, W) float map in [0, 1]}``
and a default ``threshold``, and any labelled set with ``len(ds)``, ``ds[i] -> (PIL image, (H, W) bool
mask)``, ``ds.items[i].image_id``, ``ds.name`` and ``ds.prompts``. Every prompt is scored against the
same ground-truth mask, so the report answers "which phrasing segments this class best".

A segmenter of this project (``engine.segmenter.SegmenterBase``) also gives each prompt its own calibrated
threshold and a photo-level presence score; a prompt that is not found scores as an empty mask, as the user
gets it. With several sets (`evaluate_sets`), every prompt also runs on the other sets' photos as an absent
concept (empty ground truth): its false-alarm rate is the share of those photos where its mask covers more
than 1% of the photo, and its presence AUROC how well presence tells its own labelled photos from them. A
photo of another set may hold the concept unlabelled (a crack beside a taped joint), so the rate is an
upper bound.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from engine.metrics import THRESHOLDS, dice, iou, pixel_accuracy, precision, recall, sweep_counts
from engine.prediction import presence_score

#: A photo is a false alarm for an absent prompt when its mask covers more than this share of the photo.
FALSE_ALARM_AREA = 0.01


def false_alarm_rate(areas, limit: float = FALSE_ALARM_AREA) -> float:
    """Share of photos whose mask area (a fraction of the photo, in [0, 1]) exceeds `limit`; 0.0 for none."""
    areas = np.asarray(areas, dtype=np.float64)
    return float((areas > limit).mean()) if areas.size else 0.0


def auroc(positives, negatives) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting one half.

    1.0: every positive scores above every negative; 0.5: no separation; 0.0: reversed. None when either
    side is empty.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    if pos.size == 0 or neg.size == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (pos.size * neg.size))


@dataclass
class AbsentReport:
    """One prompt on the photos of the other sets (absent concept, empty ground truth), at its threshold.

    false_alarm_rate: share of those photos whose mask covers more than FALSE_ALARM_AREA of the photo (an upper
    bound: such a photo may hold the concept unlabelled); mean_area: the mean share of the photo marked.
    worst: (dataset/image_id, area), largest first.
    """

    n_images: int
    false_alarm_rate: float
    mean_area: float
    worst: list[tuple[str, float]]


def absent_report(areas, image_ids: Sequence[str], k_worst: int = 5) -> AbsentReport:
    """AbsentReport from each absent photo's mask area (fraction of the photo in [0, 1])."""
    areas = np.asarray(areas, dtype=np.float64)
    order = np.argsort(-areas, kind="stable")[:k_worst]
    return AbsentReport(n_images=int(areas.size), false_alarm_rate=false_alarm_rate(areas),
                        mean_area=float(areas.mean()) if areas.size else 0.0,
                        worst=[(str(image_ids[j]), float(areas[j])) for j in order])


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
    presence_threshold: float = 0.0
    found_rate: float = 0.0  # share of the set's photos where the prompt was found
    dataset: str = ""
    absent: AbsentReport | None = None  # with several sets: on the other sets' photos
    presence_auroc: float | None = None  # own photos with a non-empty mask vs the other sets' photos


@dataclass
class EvalReport:
    """Evaluation of several prompts on one labelled set (``dataset`` is the set's name), or on several
    (`evaluate_sets`: ``dataset`` joins their names with " + ", each prompt names its own in ``.dataset``)."""

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
            if rep.absent is not None:
                row["absent"]["worst"] = [{"image_id": str(i), "area": float(v)} for i, v in rep.absent.worst]
            prompts[prompt] = row
        return {"dataset": self.dataset, "prompts": prompts}

    def format_table(self) -> str:
        """A plain-text table, one row per prompt: scores with 3 decimals, threshold 2, ms/img 1."""
        absent = any(r.absent is not None for r in self.prompts.values())
        header = ["prompt", "n", "mIoU", "Dice", "pooled IoU", "precision", "recall", "best thr", "ms/img"]
        if absent:
            header[1:1] = ["set"]
            header[-1:-1] = ["thr", "absent n", "false alarm", "absent area", "presence AUROC"]
        rows = []
        for prompt, r in self.prompts.items():
            row = [prompt, str(r.n_images), f"{r.miou:.3f}", f"{r.dice:.3f}", f"{r.pooled_iou:.3f}",
                   f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.best_threshold:.2f}", f"{r.ms_per_image:.1f}"]
            if absent:
                a = r.absent
                row[1:1] = [r.dataset]
                row[-1:-1] = [f"{r.threshold:.2f}", str(a.n_images) if a else "-",
                              f"{a.false_alarm_rate:.1%}" if a else "-", f"{a.mean_area:.2%}" if a else "-",
                              "-" if r.presence_auroc is None else f"{r.presence_auroc:.3f}"]
            rows.append(row)
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


def _checked_prompts(dataset, prompts) -> list[str]:
    """The prompts (stripped, as segmenters key their maps by the stripped prompt), checked."""
    prompts = [p.strip() for p in (dataset.prompts if prompts is None else prompts)]
    if not prompts or not all(prompts):
        raise ValueError(f"no prompts or an empty prompt in {prompts}; pass prompts=['segment crack', ...]")
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"duplicate prompts in {prompts}; pass each prompt once")
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} is empty; nothing to evaluate")
    return prompts


def operating_thresholds(segmenter, prompts: Sequence[str], threshold: float | None) -> tuple[dict, dict]:
    """({prompt: pixel threshold}, {prompt: presence threshold}) evaluation applies.

    threshold: None for the segmenter's own (per prompt where it has `thresholds_for`, else its `.threshold`);
    a number in [0, 1] for every prompt's pixel and presence threshold.
    """
    if threshold is not None:
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside [0, 1]")
    if hasattr(segmenter, "thresholds_for"):
        return segmenter.thresholds_for(prompts, threshold), segmenter.presence_thresholds_for(prompts, threshold)
    if threshold is None:
        threshold = getattr(segmenter, "threshold", None)
        if threshold is None:
            raise ValueError("segmenter has no .threshold; pass threshold=... to evaluate")
        threshold = float(threshold)
    return {p: threshold for p in prompts}, {p: threshold for p in prompts}


def _maps_and_presence(segmenter, image, prompts: list[str], threshold: float | None):
    """({prompt: full-size raw map}, {prompt: presence}) from one forward pass."""
    if hasattr(segmenter, "evaluation_maps"):
        return segmenter.evaluation_maps(image, prompts, threshold=threshold)
    probs = segmenter.predict(image, prompts)  # a plain segmenter: presence from its full-size maps
    return probs, {p: presence_score(np.asarray(probs[p], dtype=np.float32)) for p in probs if probs[p] is not None}


@dataclass
class _Scores:
    """Counts gathered over a set: per own prompt, pooled (tp, fp, fn, tn) at the operating threshold, per-image
    IoU at the operating threshold (column 0) and at each sweep threshold (columns 1..T), per-image Dice,
    presence and found; per absent prompt, each photo's mask area and presence."""

    image_ids: list[str]
    pooled: dict[str, np.ndarray]
    ious: dict[str, np.ndarray]  # (n, 1 + T)
    dice: dict[str, np.ndarray]  # (n,)
    presence: dict[str, np.ndarray]  # (n,), own and absent prompts
    found: dict[str, np.ndarray]  # (n,) bool, own prompts
    gt_nonempty: np.ndarray  # (n,) bool
    absent_area: dict[str, np.ndarray]  # (n,), absent prompts
    predict_s: float


def _score_images(segmenter, dataset, prompts, absent, thresholds, presence_thr, override, progress,
                  on_image) -> _Scores:
    n = len(dataset)
    every = [*prompts, *absent]
    scores = _Scores([], {p: np.zeros(4, dtype=np.int64) for p in prompts},
                     {p: np.empty((n, 1 + len(THRESHOLDS))) for p in prompts}, {p: np.empty(n) for p in prompts},
                     {p: np.empty(n) for p in every}, {p: np.empty(n, bool) for p in prompts}, np.empty(n, bool),
                     {p: np.empty(n) for p in absent}, 0.0)
    for i in tqdm(range(n), desc=f"eval {dataset.name}", leave=False, disable=not progress, file=sys.stderr):
        image, gt = dataset[i]
        gt = np.asarray(gt, dtype=bool)
        scores.image_ids.append(str(dataset.items[i].image_id))
        scores.gt_nonempty[i] = gt.any()
        t0 = time.perf_counter()
        probs, presence = _maps_and_presence(segmenter, image, every, override)
        scores.predict_s += time.perf_counter() - t0
        for p in every:
            prob = _check_prob(probs.get(p), p, gt.shape)
            found = presence[p] >= presence_thr[p]
            scores.presence[p][i] = presence[p]
            if p in scores.absent_area:
                scores.absent_area[p][i] = float((prob >= thresholds[p]).mean()) if found else 0.0
                continue
            counts = sweep_counts(prob, gt, np.concatenate([[thresholds[p]], THRESHOLDS]))  # (1 + T, 4)
            if not found:  # the user gets an empty mask; the sweep stays raw (it picks pixel thresholds)
                fg = int(gt.sum())
                counts[0] = (0, 0, fg, gt.size - fg)
            scores.found[p][i] = found
            scores.pooled[p] += counts[0]
            scores.ious[p][i] = [iou(*c[:3]) for c in counts]
            scores.dice[p][i] = dice(*counts[0, :3])
        if on_image is not None:
            on_image(i + 1, n)
    return scores


def _prompt_report(scores: _Scores, prompt: str, threshold: float, presence_threshold: float, k_worst: int,
                   dataset: str) -> PromptReport:
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
        presence_threshold=presence_threshold,
        found_rate=float(scores.found[prompt].mean()),
        dataset=dataset,
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
        threshold: binarisation threshold in [0, 1] (pixel positive when prob >= threshold) for every prompt;
            None for the segmenter's own (each prompt's calibrated threshold where the model has them).
        k_worst: how many lowest-IoU images to list per prompt.
        progress: show a tqdm progress bar on stderr, cleared when done.
        on_image: called as ``on_image(done, n)`` after each image, ``done`` = 1 .. n (for UI progress).

    Returns:
        EvalReport with one PromptReport per prompt, in the given order.

    Raises:
        ValueError: empty dataset or prompt list, a bad threshold, or a segmenter output of the wrong
            shape/dtype/range.
    """
    return evaluate_sets(segmenter, [(dataset, prompts)], threshold=threshold, k_worst=k_worst, progress=progress,
                         on_image=on_image)


def evaluate_sets(segmenter, sets: Sequence[tuple], *, threshold: float | None = None, k_worst: int = 5,
                  progress: bool = True, on_image: Callable[[int, int], None] | None = None) -> EvalReport:
    """Score each set's prompts on its own photos, and on every other set's photos as absent concepts.

    sets: (labelled set, prompts or None for its own) pairs; a prompt belongs to one set only. One predict call
    per photo runs its set's prompts and the other sets' together. With one set this is `evaluate`.
    on_image: called as ``on_image(done, total)`` over all sets' photos.
    """
    if k_worst < 0:
        raise ValueError(f"k_worst must be >= 0, got {k_worst}")
    checked = [(ds, _checked_prompts(ds, prompts)) for ds, prompts in sets]
    every = [p for _, prompts in checked for p in prompts]
    if len(set(every)) != len(every):
        raise ValueError(f"a prompt appears in two sets ({every}); give each set its own prompts")
    thresholds, presence_thr = operating_thresholds(segmenter, every, threshold)
    total, done = sum(len(ds) for ds, _ in checked), 0
    per_set = []
    for ds, prompts in checked:
        absent = [p for p in every if p not in prompts]
        offset = done
        tick = None if on_image is None else (lambda i, n, offset=offset: on_image(offset + i, total))
        per_set.append(_score_images(segmenter, ds, prompts, absent, thresholds, presence_thr, threshold, progress,
                                     tick))
        done += len(ds)
    reports = {}
    for k, (ds, prompts) in enumerate(checked):
        for p in prompts:
            rep = _prompt_report(per_set[k], p, thresholds[p], presence_thr[p], k_worst, str(ds.name))
            others = [(checked[j][0], per_set[j]) for j in range(len(checked)) if j != k]
            if others:
                areas = np.concatenate([sc.absent_area[p] for _, sc in others])
                ids = [f"{o.name}/{i}" for o, sc in others for i in sc.image_ids]
                rep.absent = absent_report(areas, ids, k_worst)
                own = per_set[k].presence[p][per_set[k].gt_nonempty]
                rep.presence_auroc = auroc(own, np.concatenate([sc.presence[p] for _, sc in others]))
            reports[p] = rep
    return EvalReport(dataset=" + ".join(str(ds.name) for ds, _ in checked), prompts=reports)
