"""Segment a batch of photos (several uploads, or a zip of photos) into a zip of masks, a CSV and an HTML report.

The Segment tab's batch input and /segment_batch call `batch_photos` (what was uploaded -> named photo files,
a zip safely extracted) and then `segment_batch`. The masks, the CSV and the report are the ones `python -m
engine predict` writes (`engine.prediction.write_prediction`, `write_predictions_csv`, `engine.report`).
Cost is bounded: at most `max_photos` photos per batch (MAX_BATCH_PHOTOS locally, `Limits.batch_photos` on a
public app), the zip extracted with the archive limits, and each photo decoded by the segmenter at model size
and again for its thumbnail at THUMB_SIDE (`load_image(max_side=...)`); full-size masks are written one at a
time. No gradio here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from engine.app.segment import image_id_for
from engine.data.archive import safe_extract_zip
from engine.errors import ImageError
from engine.images import IMAGE_SUFFIXES
from engine.masks import mask_names
from engine.prediction import PREDICTIONS_CSV, write_prediction, write_predictions_csv
from engine.report import report_photo, write_report

__all__ = ["MAX_BATCH_PHOTOS", "REPORT_HTML", "BatchPhoto", "BatchResult", "batch_photos", "segment_batch"]

MAX_BATCH_PHOTOS = 500  # photos per batch when the app is not public (public: Limits.batch_photos)
REPORT_HTML = "report.html"
_ZIP_MAX_BYTES = 1024**3  # a zip of photos unpacks to at most this


@dataclass(frozen=True)
class BatchPhoto:
    """One photo of a batch: the file to read, the name the user knows it by, and its mask-file stem."""

    path: Path
    name: str
    image_id: str


@dataclass
class BatchResult:
    """A segmented batch: the masks zip, predictions.csv, report.html, the CSV rows, the photos that could not
    be read (name: reason) and the photos done."""

    zip_path: Path
    csv_path: Path
    report_path: Path
    rows: list[list]
    failed: dict[str, str] = field(default_factory=dict)
    n_photos: int = 0


def _is_photo(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _zip_images(zip_path: Path, dest: Path, max_photos: int) -> list[tuple[Path, str]]:
    """The photos of a zip of photos, safely extracted into dest; (path, name inside the zip), sorted.

    Judged from the zip's names before a byte is written: a zip without photos, or with more than `max_photos`,
    is refused as it is, and only the photos are extracted (anything else in it is never written).
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = [n for n in archive.namelist() if _is_photo(n)]
    except (zipfile.BadZipFile, OSError):
        names = None  # safe_extract_zip says what is wrong with it
    if names is not None and not names:
        raise ValueError(f"{zip_path.name} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}); zip the photos "
                         "themselves.")
    if names is not None and len(names) > max_photos:
        raise ValueError(f"Too many photos: {zip_path.name} holds {len(names)}, at most {max_photos} per batch "
                         "here; split the photos into smaller batches.")
    safe_extract_zip(zip_path, dest, max_files=4 * max_photos + 100, max_bytes=_ZIP_MAX_BYTES, include=_is_photo)
    found = sorted(p for p in dest.rglob("*") if p.is_file() and _is_photo(p.name))
    return [(p, p.relative_to(dest).as_posix()) for p in found]


def batch_photos(uploads: Sequence[tuple[str | os.PathLike, str]], work_dir: str | os.PathLike, *,
                 max_photos: int = MAX_BATCH_PHOTOS) -> list[BatchPhoto]:
    """The photos of a batch: uploads are (file, name as uploaded); a .zip is extracted into work_dir.

    Each photo gets a unique mask-file stem (`image_id_for` its name; a repeat gets "_2", "_3", ...).
    Raises ValueError for no photos, or more than `max_photos` (naming the cap).
    """
    files: list[tuple[Path, str]] = []
    for i, (path, name) in enumerate(uploads):
        path = Path(path)
        if name.lower().endswith(".zip") or path.suffix.lower() == ".zip":
            files += _zip_images(path, Path(work_dir) / f"zip-{i}", max_photos)
        else:
            files.append((path, name))
        if len(files) > max_photos:
            break
    if not files:
        raise ValueError("No photos yet: upload several photos (JPEG, PNG, WebP) or one .zip of photos.")
    if len(files) > max_photos:
        raise ValueError(f"Too many photos: at most {max_photos} per batch here; split the photos into smaller "
                         "batches.")
    photos, used = [], set()
    for path, name in files:
        stem = image_id_for(Path(name).name)
        image_id, n = stem, 1
        while image_id in used:
            n += 1
            image_id = f"{stem}_{n}"
        used.add(image_id)
        photos.append(BatchPhoto(path=path, name=name, image_id=image_id))
    return photos


def segment_batch(segmenter, photos: Sequence[BatchPhoto], prompts: Sequence[str], *, out_dir: str | os.PathLike,
                  threshold: float | None = None, progress: Callable[[float, str], None] | None = None,
                  mm_per_px: float | None = None, photo_width_mm: float | None = None) -> BatchResult:
    """Segment each photo for every prompt: masks (`{image_id}__{prompt_slug}.png`) zipped, predictions.csv and
    report.html written to out_dir. A photo that cannot be read is listed in `failed` and skipped. The CSV holds
    each mask's measurements (`engine.measure`): in mm with `mm_per_px`, or with `photo_width_mm` (the real width
    every photo shows, its scale taken photo by photo), else in pixels.

    threshold: None for each prompt's calibrated threshold, or one value for every prompt. progress(fraction,
    message) is called before each photo and at the end.
    """
    out_dir = Path(out_dir)
    masks_dir = out_dir / "masks"
    mask_names("photo", prompts)  # two prompts, one file name: refused before any photo runs
    rows, entries, failed = [], [], {}
    for i, photo in enumerate(photos):
        if progress is not None:
            progress(i / max(len(photos), 1), f"photo {i + 1}/{len(photos)}: {photo.name}")
        try:
            pred = segmenter.prediction(photo.path, prompts, threshold=threshold)
            scale = photo_width_mm / pred.size[0] if photo_width_mm else mm_per_px
            photo_rows = write_prediction(pred, photo.image_id, photo.name, masks_dir,
                                          meta=getattr(segmenter, "meta", None), mm_per_px=scale)
            entries.append(report_photo(pred, photo.path, photo.name, photo_rows))
        except ImageError as exc:
            failed[photo.name] = str(exc).replace(str(photo.path), photo.name)
            continue
        rows += photo_rows
    if not entries:
        raise ImageError("None of the photos could be read: " + "; ".join(failed.values()))
    if progress is not None:
        progress(1.0, "writing the zip, the CSV and the report")
    zip_path = out_dir / "masks.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:  # PNGs are compressed already
        for mask in sorted(masks_dir.glob("*.png")):
            archive.write(mask, mask.name)
    csv_path = write_predictions_csv(rows, out_dir / PREDICTIONS_CSV)
    used = "each prompt's own" if threshold is None else f"{threshold:.2f}"
    report_path = write_report(entries, out_dir / REPORT_HTML, model=str(getattr(segmenter, "name", "")),
                               threshold=used)
    return BatchResult(zip_path=zip_path, csv_path=csv_path, report_path=report_path, rows=rows, failed=failed,
                       n_photos=len(entries))
