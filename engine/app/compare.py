"""Compare several models on one labelled set: scores per prompt, training curves, overlays, worst cases."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from engine.app.choices import model_label
from engine.data import find_splits, open_dataset, source_photo_id, split_layout
from engine.data.archive import as_data_path, remove_upload, upload_error
from engine.draw import compare_curves, overlay, side_by_side
from engine.evaluate import evaluate_sets
from engine.fileio import read_jsonl
from engine.metrics import confusion, iou
from engine.paths import DEFAULT_SETS

if TYPE_CHECKING:
    from engine.models.cache import ModelCache

__all__ = ["COMPARE_HEADERS", "MAX_GALLERY_SIDE", "WORST_HEADERS", "CompareResult", "absent_sets_for", "eval_data_for",
           "open_eval_set", "panel_size", "read_history", "compare_models"]

# "false alarms" and "presence AUROC": each prompt on the other shared set's photos, where its concept is absent
# (engine.evaluate.evaluate_sets); "-" when the set scored is an upload or a folder.
COMPARE_HEADERS = ["model", "prompt", "n", "mIoU", "Dice", "precision", "recall", "false alarms", "presence AUROC",
                   "best thr", "ms/img"]
WORST_HEADERS = ["model", "prompt", "image", "IoU"]
_EVAL_SPLITS = ("valid", "val", "validation", "test", "train")  # the first one a root holds is scored
# A gallery image (ground truth + every model's overlay in one row) fits in this square: browsers and WebP
# (16,383 px) refuse larger ones, and a 3-model row of 6000 px photos was 24,040 px wide.
MAX_GALLERY_SIDE = 1600
_PANEL_GAP, _CAPTION_ROOM = 8, 60  # side_by_side's gap; its caption (<= 38 px) and the gaps above and below


@dataclass
class CompareResult:
    """Scores of several models on one labelled set, ready to show.

    rows: COMPARE_HEADERS per (model, prompt); curves: Plotly figure of the runs' validation mIoU;
    gallery: (image, caption) pairs, each image the ground truth and every model's overlay side by side;
    worst: WORST_HEADERS rows, lowest IoU first; reports: model label -> EvalReport.to_dict().
    """

    rows: list[list]
    curves: object
    gallery: list[tuple[Image.Image, str]]
    worst: list[list]
    reports: dict = field(default_factory=dict)


def eval_data_for(choice: str, *, data_root: str | os.PathLike, folder: str = "", zip_file: str | None = None
                  ) -> tuple[str | Path, tuple[str, ...]]:
    """(data, default prompts) for the Compare tab's "Labelled set" choice.

    choice: a shared set name (data_root/<name>, its DEFAULT_SETS prompts), "zip" (the upload) or "folder".
    """
    if choice in DEFAULT_SETS:
        return Path(data_root) / choice, DEFAULT_SETS[choice]
    if choice == "zip":
        if not zip_file:
            raise ValueError("No zip uploaded: upload a labelled set (.zip, YOLOv8 or COCO export) first.")
        return zip_file, ()
    return folder, ()


def absent_sets_for(choice: str, *, data_root: str | os.PathLike) -> list[tuple[Path, tuple[str, ...]]]:
    """The sets whose photos count as absent concepts for the Compare tab's choice: for a shared set, the other
    shared sets (with their prompts); for an upload or a folder, none."""
    if choice not in DEFAULT_SETS:
        return []
    return [(Path(data_root) / name, prompts) for name, prompts in DEFAULT_SETS.items() if name != choice]


def open_eval_set(path: str | os.PathLike, prompts: Sequence[str] = (), *, uploads_dir=None, limit: int | None = None):
    """A labelled set for evaluation: a split folder as is; for a root, its valid (else test, else train) split.

    path: a folder, a COCO .json, or (with `uploads_dir`) a .zip; limit: keep the first `limit` images.
    A zip's extracted copy that cannot be opened is deleted at once, and the error names the zip, not the
    server's folder.
    """
    uploads = uploads_dir or tempfile.gettempdir()
    p = as_data_path(path, uploads)
    split = None
    try:
        if p.is_dir() and split_layout(p) is None:
            splits = find_splits(p)
            split = next((s for s in _EVAL_SPLITS if s in splits), next(iter(splits), None))
        ds = open_dataset(p, split=split, prompts=tuple(prompts))
    except (ValueError, OSError) as exc:
        removed = remove_upload(p, uploads) if _is_zip(path) else None
        if removed is None:
            raise
        raise upload_error(exc, removed, Path(str(path)).name) from None
    if len(ds) == 0:
        raise ValueError(f"{p} holds no labelled images; check the folder.")
    if limit and limit > 0 and limit < len(ds):
        ds = ds.subset(range(int(limit)))
    return ds


def _is_zip(path: str | os.PathLike) -> bool:
    return str(path).strip().lower().endswith(".zip")


def read_history(source: str | os.PathLike) -> list[dict]:
    """The metrics.jsonl rows of a training run (given as its folder or its best/ or last/), else []."""
    p = Path(str(source))
    for folder in (p, p.parent) if p.name in ("best", "last") else (p,):
        if (folder / "metrics.jsonl").is_file():
            return read_jsonl(folder / "metrics.jsonl")
    return []


def _load_entries(cache: ModelCache, models: Sequence[str], precisions: Sequence[str]) -> list[tuple[str, str, object]]:
    """(label, source, segmenter) per model and torch precision; an ONNX export once, at its own precision."""
    # Deferred: engine.models loads torch, and `import app` must not (tests/test_app.py).
    from engine.models.cache import is_onnx_source

    entries = []
    for source in models:
        if is_onnx_source(source):
            entries.append((model_label(source), source, cache.get(source)))
            continue
        for prec in precisions:
            entries.append((model_label(source, prec), source, cache.get(source, prec)))
    return entries


def _score(entries, ds, prompts: Sequence[str], threshold: float | None, k_worst: int, absent: Sequence = ()):
    """Evaluate every entry: (rows, worst rows, reports by label, histories by run label).

    absent: (labelled set, prompts) pairs whose photos also run `prompts`, as absent concepts."""
    rows, worst, reports, curves = [], [], {}, {}
    for label, source, seg in entries:
        report = evaluate_sets(seg, [(ds, prompts), *absent], threshold=threshold, k_worst=k_worst, progress=False)
        reports[label] = report.to_dict()
        for prompt in prompts:
            r, a = report.prompts[prompt], report.prompts[prompt].absent
            rows.append([label, prompt, r.n_images, round(r.miou, 3), round(r.dice, 3), round(r.precision, 3),
                         round(r.recall, 3), f"{a.false_alarm_rate:.1%} of {a.n_images}" if a else "-",
                         "-" if r.presence_auroc is None else round(r.presence_auroc, 3), round(r.best_threshold, 2),
                         round(r.ms_per_image, 1)])
            worst.extend([label, prompt, image_id, round(v, 3)] for image_id, v in r.worst)
        history = read_history(source)
        if history:
            curves[model_label(source)] = history
    return rows, worst, reports, curves


def _gallery(entries, ds, prompts: Sequence[str], worst: list[list], threshold: float | None, n_show: int,
             k_worst: int) -> list[tuple[Image.Image, str]]:
    """The same photos under every model: the first `n_show`, then the `k_worst` the models found hardest."""
    ids = ds.ids
    hardest = sorted({r[2] for r in worst}, key=lambda i: min(r[3] for r in worst if r[2] == i))
    shown = list(dict.fromkeys([*ids[:n_show], *hardest[:k_worst]]))
    gallery = []
    for image_id in shown:
        index = ids.index(image_id)
        image, gt = ds[index]
        size = panel_size(image.size, 1 + len(entries))
        thumb = image.resize(size, Image.BILINEAR) if size != image.size else image
        panels, labels, scores = [overlay(thumb, {"ground truth": _shrink(gt, size)})], ["ground truth"], []
        for label, _, seg in entries:
            t = seg.threshold if threshold is None else threshold
            masks = {p: m >= t for p, m in seg.predict(image, prompts).items()}  # scored at full size
            panels.append(overlay(thumb, {p: _shrink(m, size) for p, m in masks.items()}))
            labels.append(label)
            scores.append(f"{label} {iou(*confusion(masks[prompts[0]], gt)[:3]):.2f}")
        tag = "sample" if image_id in ids[:n_show] else "hard case"
        caption = f"{tag} {source_photo_id(ds.items[index])} · IoU ({prompts[0]}): {', '.join(scores)}"
        gallery.append((side_by_side(panels, labels), caption))
    return gallery


def panel_size(photo_size: tuple[int, int], n_panels: int, max_side: int = MAX_GALLERY_SIDE) -> tuple[int, int]:
    """(width, height) of one gallery panel: the photo scaled down (never up) so that `n_panels` of them side
    by side, with their gaps and captions (engine.draw.side_by_side), fit in max_side x max_side pixels."""
    width, height = photo_size
    room_w = max_side - _PANEL_GAP * (n_panels + 1)
    room_h = max_side - _CAPTION_ROOM
    scale = min(1.0, room_w / (n_panels * width), room_h / height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def _shrink(mask, size: tuple[int, int]):
    """(H, W) bool mask at `size` (width, height), nearest neighbour."""
    if (mask.shape[1], mask.shape[0]) == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0


def compare_models(cache: ModelCache, models: Sequence[str], data: str | os.PathLike, prompts: Sequence[str] = (),
                   *, precisions: Sequence[str] = ("fp32",), limit: int | None = None, uploads_dir=None,
                   threshold: float | None = None, n_show: int = 3, k_worst: int = 3,
                   absent: Sequence[tuple] = ()) -> CompareResult:
    """Evaluate each model (x each torch precision) on one labelled set and gather tables, curves and overlays.

    ONNX exports run once whatever `precisions` says (their precision is fixed at export). prompts: default to
    the set's own. threshold: None uses each model's calibrated threshold. absent: (path, prompts) of other
    labelled sets (`absent_sets_for`), at most `limit` photos each, on which every prompt also runs where its
    concept is absent: the rows' false alarms and presence AUROC. Their prompts that are among `prompts` are
    left out, and a set left without prompts is skipped.
    """
    models = [m for m in dict.fromkeys(str(m).strip() for m in models) if m]
    if not models:
        raise ValueError("No model chosen: pick at least one model (two or more to compare).")
    precisions = list(dict.fromkeys(precisions or ["fp32"]))
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise ValueError(f"Precision {p!r} is not one of fp32, bf16.")
    ds = open_eval_set(data, prompts, uploads_dir=uploads_dir, limit=limit)
    try:
        prompts = list(prompts) or list(ds.prompts)
        if not prompts:
            raise ValueError("No prompts given and the data set names none: type the prompts to score, "
                             "e.g. 'segment crack'.")
        others = []
        for path, own in absent:
            own = [p for p in own if p not in prompts][:1]  # one is enough: the photos are what matter
            if own:
                others.append((open_eval_set(path, own, limit=limit), own))
        entries = _load_entries(cache, models, precisions)
        rows, worst, reports, curves = _score(entries, ds, prompts, threshold, k_worst, others)
        gallery = _gallery(entries, ds, prompts, worst, threshold, n_show, k_worst)
    finally:  # an uploaded zip's extracted copy is not needed once scored
        if _is_zip(data):
            remove_upload(ds.root, uploads_dir or tempfile.gettempdir())
    worst.sort(key=lambda r: r[3])
    return CompareResult(rows=rows, curves=compare_curves(curves, title="Validation mIoU of the chosen runs"),
                         gallery=gallery, worst=worst, reports=reports)
