"""One photo's answer to several prompts, kept at model resolution: presence, found / not found, bounded masks.

`SegmenterBase.prediction(image, prompts)` returns a `Prediction`. It holds each prompt's logits at the model's
input size (S x S, e.g. 352 x 352: 0.5 MB per prompt) and nothing at the photo's size; a full-size binary mask
is built only when asked for, one prompt at a time and band by band (`upsample_mask`), so a 12240 x 12240
photo with 8 prompts never holds a full-size float map (8.6 GB before it did; docs/speed.md "Memory" has the figures).

Presence (the photo-level "is it there at all" score) is the maximum of the probability map after a 3 x 3
box mean at model resolution: the strongest small patch rather than the strongest single pixel, so one stray
pixel does not count as a find. Measured on the bundled model over both valid sets (presence AUROC, own photos
vs the other set's): raw max 0.834 / 0.547 (crack / taping), 3 x 3 mean 0.829 / 0.553, 9 x 9 0.781 / 0.561,
mask area at 0.45 0.671 / 0.580, mean probability 0.530 / 0.536. The small box keeps the raw maximum's
separation and drops single-pixel finds; wide boxes and areas separate worse.

A prompt is *found* when its presence reaches its presence threshold (`drywall_qa.json` "presence_thresholds",
calibrated by `engine.calibrate`; default: the prompt's pixel threshold, i.e. found when at least a 3 x 3 patch
at model resolution averages above the threshold). A prompt that is not found gets an empty mask unless
`raw=True` asks for the thresholded map as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ImageError
from engine.fileio import atomic_write_text
from engine.masks import mask_names, save_mask

PRESENCE_KERNEL = 3  # box size (model pixels) of the presence score's smoothing
# Output pixels computed per band when upsampling a map: bounds the float temporaries to ~2 x 4 MB x 4 bytes.
BAND_PIXELS = 4_000_000


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic, float32, without overflow warnings for large |x|."""
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def presence_score(prob: np.ndarray, kernel: int = PRESENCE_KERNEL) -> float:
    """Photo-level presence in [0, 1]: max over the (S, S) probability map of its kernel x kernel box mean.

    prob: (S, S) float in [0, 1] at model resolution. Windows are clipped at the border (a corner averages only
    its pixels inside the map), so a map that fires everywhere scores its value and an empty one 0.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if kernel <= 1 or min(prob.shape) < kernel:
        return float(prob.max()) if prob.size else 0.0
    pad = kernel // 2
    # box sums through an integral image, with clipped windows: sum / count of pixels inside the map
    padded = np.pad(prob, pad, constant_values=0.0)
    ones = np.pad(np.ones_like(prob), pad, constant_values=0.0)

    def box(a):
        c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        return c[kernel:, kernel:] - c[:-kernel, kernel:] - c[kernel:, :-kernel] + c[:-kernel, :-kernel]

    return float((box(padded) / box(ones)).max())


def _axis_weights(n_out: int, n_in: int):
    """Bilinear source indices and weights along one axis, as torch's interpolate(align_corners=False)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, None)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def upsample_mask(logits: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """(S, S) logits -> (H, W) = size[::-1] bool: sigmoid(bilinear upsample) >= threshold, band by band.

    The same mask as thresholding `engine.segmenter.probability_maps` (up to float rounding), but the float
    temporaries are one band of at most BAND_PIXELS pixels: the result (1 byte a pixel) is the only full-size
    array.
    """
    logits = np.asarray(logits, dtype=np.float32)
    w, h = size
    xi0, xi1, xl = _axis_weights(w, logits.shape[1])
    cols = logits[:, xi0] * (1.0 - xl) + logits[:, xi1] * xl  # (S, W): columns first, rows per band
    yi0, yi1, yl = _axis_weights(h, logits.shape[0])
    out = np.empty((h, w), dtype=bool)
    band = max(1, BAND_PIXELS // max(1, w))
    for top in range(0, h, band):
        rows = slice(top, min(h, top + band))
        lam = yl[rows, None]
        values = cols[yi0[rows]] * (1.0 - lam) + cols[yi1[rows]] * lam
        np.greater_equal(sigmoid(values), threshold, out=out[rows])
    return out


def upsample_map(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(S, S) logits -> (H, W) float32 probabilities (bilinear, then sigmoid). For display-sized maps only."""
    logits = np.asarray(logits, dtype=np.float32)
    w, h = size
    xi0, xi1, xl = _axis_weights(w, logits.shape[1])
    yi0, yi1, yl = _axis_weights(h, logits.shape[0])
    cols = logits[:, xi0] * (1.0 - xl) + logits[:, xi1] * xl
    return sigmoid(cols[yi0] * (1.0 - yl[:, None]) + cols[yi1] * yl[:, None])


@dataclass
class Prediction:
    """One photo, several prompts, at model resolution.

    logits: {prompt: (S, S) float32 before sigmoid}; size: the photo's displayed (width, height);
    thresholds / presence_thresholds: {prompt: float in [0, 1]} applied to pixels / to the presence score;
    presence: {prompt: presence_score of the probability map}; ms: model time for this photo.
    """

    logits: dict[str, np.ndarray]
    size: tuple[int, int]
    thresholds: dict[str, float]
    presence_thresholds: dict[str, float]
    presence: dict[str, float]
    ms: float = 0.0

    @property
    def prompts(self) -> list[str]:
        return list(self.logits)

    def found(self, prompt: str) -> bool:
        """True when the prompt's presence reaches its presence threshold."""
        return self.presence[prompt] >= self.presence_thresholds[prompt]

    def max_score(self, prompt: str) -> float:
        """The map's highest probability (model resolution)."""
        return float(sigmoid(self.logits[prompt].max()))

    def probability(self, prompt: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) float32 probability map at `size` (default the photo's). Full size costs 4 bytes a pixel:
        use it for display sizes or small photos."""
        return upsample_map(self.logits[prompt], size or self.size)

    def mask(self, prompt: str, size: tuple[int, int] | None = None, *, raw: bool = False) -> np.ndarray:
        """(H, W) bool mask at `size` (default the photo's): empty when the prompt is not found, unless raw."""
        size = size or self.size
        if not raw and not self.found(prompt):
            return np.zeros(size[::-1], dtype=bool)
        return upsample_mask(self.logits[prompt], size, self.thresholds[prompt])


def resolve_thresholds(prompts, default: float, per_prompt: Mapping[str, float] | None,
                       override: float | None = None) -> dict[str, float]:
    """{prompt: threshold}: `override` for every prompt if given, else per_prompt[p], else `default`."""
    if override is not None:
        override = float(override)
        if not 0.0 <= override <= 1.0:
            raise ValueError(f"Threshold {override} is outside [0, 1]; pass a probability such as 0.5.")
        return {p: override for p in prompts}
    per_prompt = per_prompt or {}
    return {p: float(per_prompt.get(p, default)) for p in prompts}


# -- writing: mask files and the CSV of `python -m engine predict` ------------------------------------------

PREDICTIONS_CSV = "predictions.csv"
# The measurement columns (engine.measure.summary_columns): regions, total crack length, widest crack and its
# width band (crack-like prompts), total area (area-like prompts), and the unit (mm with a scale, else px).
MEASURE_COLUMNS = ["count", "length", "max_width", "band", "area", "unit"]
CSV_HEADER = ["photo", "prompt", "found", "area_percent", "presence", "max_score", "threshold", "presence_threshold",
              "ms", *MEASURE_COLUMNS]


def write_prediction(pred: Prediction, image_id: str, photo: str, out_dir, *, meta: Mapping | None = None,
                     mm_per_px: float | None = None) -> list[list]:
    """Write one photo's masks as `{image_id}__{prompt_slug}.png` (one prompt at a time, so one full-size mask
    in memory); returns its CSV rows (CSV_HEADER; area in % of the photo; the measurements of each mask,
    `engine.measure.measure_prompt`, with the model's `meta` saying which prompts are crack-like and the photo's
    scale `mm_per_px`, None for pixels)."""
    from engine.measure import measure_prompt, summary_columns  # deferred: scikit-image loads on first use

    names = mask_names(image_id, pred.prompts)  # two prompts, one file name: refused before writing
    rows = []
    for p in pred.prompts:
        mask = pred.mask(p)
        area = 100.0 * np.count_nonzero(mask) / mask.size
        save_mask(mask, Path(out_dir) / names[p])
        measured = summary_columns(measure_prompt(mask, p, meta, mm_per_px=mm_per_px))
        rows.append([photo, p, "found" if pred.found(p) else "not found", round(area, 3), round(pred.presence[p], 4),
                     round(pred.max_score(p), 4), pred.thresholds[p], pred.presence_thresholds[p], round(pred.ms, 1),
                     *measured])
    return rows


def write_predictions_csv(rows: list[list], path) -> Path:
    """CSV_HEADER, then one row per photo and prompt; written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return atomic_write_text(Path(path), buffer.getvalue())


def unique_images(paths: list[Path]) -> list[Path]:
    """`paths` without repeats of one file; two different files with one stem would write the same mask files."""
    seen: dict[Path, Path] = {}
    stems: dict[str, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            continue
        if path.stem in stems:
            raise ValueError(f"{stems[path.stem]} and {path} would both write {path.stem}__*.png; rename one or "
                             "run them with different --out folders.")
        seen[key], stems[path.stem] = path, path
    return list(seen.values())


def predict_chunks(segmenter, paths: list[Path], prompts: list[str], threshold: float | None):
    """For `python -m engine predict` (a chunk of --batch-size photos): yield (path, Prediction) for each path,
    or (path, the ImageError) for one that cannot be read.

    One forward pass for the whole chunk; when a photo in it cannot be read, the photos are run one by one, so
    the readable ones still get their masks.
    """
    try:
        yield from zip(paths, segmenter.prediction_batch(paths, prompts, threshold=threshold))
        return
    except ImageError:
        pass
    for path in paths:
        try:
            pred = segmenter.prediction(path, prompts, threshold=threshold)
        except ImageError as exc:
            yield path, exc
        else:
            yield path, pred
