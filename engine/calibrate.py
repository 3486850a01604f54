"""Per-prompt thresholds that keep absent-concept false alarms low: `calibrate_model` and `write_thresholds`.

For each prompt this picks a pixel threshold t and a presence threshold tau (see `engine.prediction`) that
maximise the mean per-photo IoU over the prompt's own photos plus that over the other sets' photos, where the
concept is absent: there an empty prediction scores IoU 1 and anything else 0 (each mean weighs half). Own
photos score the usual IoU at t, or, when the prompt is not found (presence < tau), the IoU of an empty mask (1
on a photo with nothing labelled, else 0). So a threshold that marks the salient line whatever the prompt says
pays for it on the other sets.

A presence threshold must keep MIN_FOUND of the own photos with the concept found. Where the thresholds are set
on photos the model has fitted (a concept with too few held-out photos), that floor holds on its held-out photos
too (`unseen`): presence runs high on fitted photos, so a floor met there alone gated away a fifth of the taping
photos the bundled model had never seen (tools/replica_scores.py; docs/training.md).

Training calls it at every validation (engine/train/loop.py `calibrate`); `python -m engine calibrate` runs it
on a saved model and rewrites its drywall_qa.json.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.evaluate import best_threshold
from engine.fileio import atomic_write_json
from engine.metrics import THRESHOLDS, iou, sweep_counts
from engine.paths import META_FILE

#: The share of a prompt's own photos with a labelled mask that must stay *found*: the presence threshold gates
#: false alarms only as far as it keeps finding what is there ("a prompt for something present must find it").
#: Without this floor, a model whose presence separates poorly (AUROC 0.83-0.89 on the bundled one) was gated
#: to mIoU 0.199 / 0.086 on the valid sets to buy fewer false alarms.
MIN_FOUND = 0.95

#: Presence thresholds tried: the pixel grid, then finer steps near 1 where a salient-line model's presence sits.
PRESENCE_GRID = np.round(np.concatenate([THRESHOLDS, [0.97, 0.98, 0.99, 0.995, 0.999]]), 3)


@dataclass
class PromptCalibration:
    """One prompt's picked thresholds and the score they reach (the mean of own and absent photos' mean IoU)."""

    threshold: float
    presence_threshold: float
    score: float
    n_own: int
    n_absent: int
    sweep: dict[float, float]  # pixel threshold -> mean IoU on own photos, ungated (what evaluate's sweep gives)
    n_unseen: int = 0  # photos with the concept, not fitted by the model, that the found floor also held on


@dataclass
class _Gathered:
    """Per photo: own photos' IoU at each pixel threshold (n, T), presence, empty label; absent photos'
    raw max probability and presence."""

    own_iou: list
    own_presence: list
    own_empty: list
    absent_max: list
    absent_presence: list


def pick_thresholds(own_iou: np.ndarray, own_presence: np.ndarray, own_empty: np.ndarray, absent_max: np.ndarray,
                    absent_presence: np.ndarray, thresholds=THRESHOLDS, presence_grid=PRESENCE_GRID,
                    min_found: float = MIN_FOUND, unseen_presence=()):
    """The (pixel threshold, presence threshold, score) with the best score, among the presence thresholds that
    keep at least `min_found` of the own photos with a labelled mask found, and of `unseen_presence` (the presence
    of photos with the concept that the model has not fitted) where given. The score is the mean of two means,
    own photos' IoU and absent photos' (each half, whatever their counts: with 11 own photos against 91 absent
    ones a plain mean bought silence on the absent photos with the own photos' masks), or the one mean there is.

    own_iou: (n, T) IoU at each of `thresholds`; own_presence, own_empty: (n,); absent_max, absent_presence: (m,)
    (an absent photo scores 1 when its mask is empty: not found, or no pixel reaches the threshold).
    Ties go to the pixel threshold nearest 0.5, then to the lowest presence threshold (the least gating).
    """
    own_iou, thresholds = np.asarray(own_iou, float).reshape(len(own_presence), -1), np.asarray(thresholds, float)
    own_presence, own_empty = np.asarray(own_presence, float), np.asarray(own_empty, bool)
    absent_max, absent_presence = np.asarray(absent_max, float), np.asarray(absent_presence, float)
    n_own, n_absent = len(own_presence), len(absent_max)
    if n_own + n_absent == 0:
        raise ValueError("no photos to calibrate on; pass sets with images")
    halves = 2 if n_own and n_absent else 1
    best = None
    labelled, unseen = ~own_empty, np.asarray(unseen_presence, float)
    for tau in presence_grid:
        own_found = own_presence >= tau  # (n,)
        if best is not None and labelled.any() and own_found[labelled].mean() < min_found:
            continue  # gates away too many photos where the concept is there
        if best is not None and len(unseen) and (unseen >= tau).mean() < min_found:
            continue  # ... or too many of those the model has not seen
        own = np.where(own_found[:, None], own_iou, own_empty[:, None].astype(float)).sum(axis=0)  # (T,)
        absent_found = absent_presence >= tau
        fired = absent_found[:, None] & (absent_max[:, None] >= thresholds[None, :])  # (m, T)
        absent = (~fired).sum(axis=0)
        total = own / max(n_own, 1) + absent / max(n_absent, 1)
        t, score = best_threshold({float(t): float(v) / halves for t, v in zip(thresholds, total)})
        if best is None or score > best[2] + 1e-12:
            best = (t, float(tau), score)
    return best


def _gather(segmenter, sets: Sequence[tuple], n_images: int, progress: bool) -> dict[str, _Gathered]:
    """Run every set's first n_images photos once with all prompts; collect what `pick_thresholds` needs."""
    every = [p for _, prompts in sets for p in prompts]
    out = {p: _Gathered([], [], [], [], []) for p in every}
    for ds, prompts in sets:
        count = min(len(ds), n_images)
        for i in tqdm(range(count), desc=f"calibrate {ds.name}", leave=False, disable=not progress, file=sys.stderr):
            image, gt = ds[i]
            gt = np.asarray(gt, dtype=bool)
            maps, presence = segmenter.evaluation_maps(image, every)
            for p in every:
                g = out[p]
                if p in prompts:
                    g.own_iou.append([iou(*c[:3]) for c in sweep_counts(maps[p], gt, THRESHOLDS)])
                    g.own_presence.append(presence[p])
                    g.own_empty.append(not gt.any())
                else:
                    g.absent_max.append(float(maps[p].max()))
                    g.absent_presence.append(presence[p])
    return out


def calibrate_model(segmenter, sets: Sequence[tuple], n_images: int = 100, *, unseen: dict | None = None,
                    progress: bool = False) -> dict[str, PromptCalibration]:
    """{prompt: PromptCalibration} from each set's first n_images photos.

    segmenter: an `engine.segmenter.SegmenterBase` (torch or ONNX); sets: (labelled set, its prompts) pairs, a
    prompt in one set only; the other sets' photos count as absent for it. Works on a model being trained (the
    training loop) and on a saved one (`python -m engine calibrate`).
    unseen: {prompt: labelled set} of photos with the prompt's concept that the model has not fitted, for a
    prompt whose set holds photos it has: its presence threshold keeps MIN_FOUND of their first n_images found.
    """
    sets = [(ds, [p.strip() for p in prompts]) for ds, prompts in sets]
    every = [p for _, prompts in sets for p in prompts]
    if len(set(every)) != len(every):
        raise ValueError(f"a prompt appears in two sets ({every}); give each set its own prompts")
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    unknown = set(unseen or ()) - set(every)
    if unknown:
        raise ValueError(f"unseen photos for prompts no set holds: {sorted(unknown)}")
    gathered = _gather(segmenter, sets, n_images, progress)
    floors = {p: _unseen_presence(segmenter, ds, p, n_images, progress) for p, ds in (unseen or {}).items()}
    out = {}
    for p, g in gathered.items():
        own_iou = np.asarray(g.own_iou, dtype=float).reshape(len(g.own_presence), len(THRESHOLDS))
        floor = floors.get(p, [])
        t, tau, score = pick_thresholds(own_iou, g.own_presence, g.own_empty, g.absent_max, g.absent_presence,
                                        unseen_presence=floor)
        sweep = {float(t): float(v) for t, v in zip(THRESHOLDS, own_iou.mean(axis=0))} if len(own_iou) else {}
        out[p] = PromptCalibration(t, tau, score, len(g.own_presence), len(g.absent_max), sweep, len(floor))
    return out


def _unseen_presence(segmenter, ds, prompt: str, n_images: int, progress: bool) -> list[float]:
    """The presence of `prompt` on the first n_images photos of ds with something labelled."""
    out = []
    for i in tqdm(range(min(len(ds), n_images)), desc=f"calibrate {ds.name} (unseen)", leave=False,
                  disable=not progress, file=sys.stderr):
        image, gt = ds[i]
        if np.asarray(gt, dtype=bool).any():
            out.append(float(segmenter.prediction(image, [prompt]).presence[prompt]))
    return out


def write_thresholds(model_folder, calibration: dict[str, PromptCalibration], *, source: str = "") -> Path:
    """Merge the calibration into the folder's drywall_qa.json ("thresholds", "presence_thresholds"), atomically.

    Prompts not calibrated keep their entries; the rest of the file is kept as it is.
    """
    from engine.models.io import read_meta  # the one reader of drywall_qa.json (it loads transformers)

    path = Path(model_folder) / META_FILE
    meta = read_meta(model_folder)
    meta["thresholds"] = {**meta.get("thresholds", {}), **{p: c.threshold for p, c in calibration.items()}}
    meta["presence_thresholds"] = {**meta.get("presence_thresholds", {}),
                                   **{p: c.presence_threshold for p, c in calibration.items()}}
    meta["calibration"] = {"source": source, "score": {p: round(c.score, 4) for p, c in calibration.items()},
                           "images": {p: [c.n_own, c.n_absent] for p, c in calibration.items()}}
    atomic_write_json(path, meta)
    return path
