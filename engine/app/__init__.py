"""What the app's handlers call: one function per button, plain types in and out (no gradio here).

`app.py` turns widget values into one call below and the result back into widget values. This module holds
the parts that are not layout: safe extraction of uploaded zips, the cache of loaded models, segmenting one
photo into everything the Segment tab shows, starting training from the Train tab's choices, comparing
several models on one labelled set, and exporting with a speed report.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from engine.errors import ArchiveError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------- uploaded zips

MAX_ZIP_FILES = 20_000
MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size
MAX_ZIP_RATIO = 100  # uncompressed / compressed; JPEG exports sit near 1, YOLO label text near 3
RATIO_CHECK_BYTES = 8 * 1024**2  # ratios are judged only above this size (tiny files compress wildly)
_CHUNK = 1024**2
_SKIPPED_PREFIXES = ("__MACOSX/",)  # resource forks macOS Finder adds to zips
_SKIPPED_NAMES = frozenset({".DS_Store", "Thumbs.db"})
# Folders that belong to a data set layout (a split, or a split's parts): the set's root is above them.
_LAYOUT_FOLDERS = frozenset({"train", "valid", "val", "validation", "test", "images", "labels", "masks"})


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted (unsafe path, link, device, encryption), or None."""
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the folder with '..'"
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type in the high 16 bits (0 from DOS/Windows)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, *, max_files: int = MAX_ZIP_FILES,
                     max_bytes: int = MAX_ZIP_BYTES, max_ratio: float = MAX_ZIP_RATIO) -> Path:
    """Extract an uploaded zip into `dest` (created; must be empty or absent) and return `dest`.

    Every member is checked before anything is written: no absolute paths, no "..", no symbolic links or
    special files (Unix mode in `external_attr`), no encryption, at most `max_files` entries and `max_bytes`
    uncompressed, and no compression ratio above `max_ratio` (zip bombs) for the archive or any member larger
    than RATIO_CHECK_BYTES. Bytes are counted again while writing, so a header that lies about its size cannot
    overshoot. `__MACOSX/` and `.DS_Store` entries are skipped. On any failure `dest` is removed.
    Raises ArchiveError (a ValueError) naming the offending member and the fix.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{zip_path.name}: not a zip file ({exc}); upload the data set as a .zip archive.") from exc
    except FileNotFoundError as exc:
        raise ArchiveError(f"{zip_path}: no such file; upload the zip again.") from exc
    with archive:
        members = archive.infolist()
        if len(members) > max_files:
            raise ArchiveError(
                f"{zip_path.name} holds {len(members):,} entries, over the limit of {max_files:,}; upload a smaller "
                "subset or point to a folder on the server instead."
            )
        total = sum(m.file_size for m in members)
        packed = sum(m.compress_size for m in members)
        if total > max_bytes:
            raise ArchiveError(
                f"{zip_path.name} unpacks to {total / 1024**3:.2f} GB, over the limit of {max_bytes / 1024**3:.2f} GB; "
                "upload a smaller subset or point to a folder on the server instead."
            )
        if total > RATIO_CHECK_BYTES and total > max_ratio * max(packed, 1):
            raise ArchiveError(
                f"{zip_path.name} expands {total / max(packed, 1):.0f}x (limit {max_ratio:.0f}x), which looks like a "
                "zip bomb; upload the photos and labels as they are."
            )
        for m in members:
            problem = _member_problem(m)
            if problem:
                raise ArchiveError(f"{zip_path.name}: entry {m.filename!r} {problem}; refusing the archive. "
                                   "Re-create the zip from the data set folder itself.")
            if m.file_size > RATIO_CHECK_BYTES and m.file_size > max_ratio * max(m.compress_size, 1):
                raise ArchiveError(
                    f"{zip_path.name}: entry {m.filename!r} expands {m.file_size / max(m.compress_size, 1):.0f}x "
                    f"(limit {max_ratio:.0f}x), which looks like a zip bomb; refusing the archive."
                )
        if dest.exists() and any(dest.iterdir()):
            raise ArchiveError(f"{dest} is not empty; extract into a new folder.")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        try:
            written = 0
            for m in members:
                name = m.filename.replace("\\", "/")
                if name.startswith(_SKIPPED_PREFIXES) or PurePosixPath(name).name in _SKIPPED_NAMES:
                    continue
                target = (root / name).resolve()
                if not target.is_relative_to(root):  # belt and braces after the name checks above
                    raise ArchiveError(f"{zip_path.name}: entry {m.filename!r} leaves the folder; "
                                       "refusing the archive.")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    out = open(target, "xb")
                except FileExistsError as exc:
                    raise ArchiveError(f"{zip_path.name}: entry {m.filename!r} appears twice; "
                                       "re-create the zip.") from exc
                with archive.open(m) as src, out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > min(total, max_bytes):
                            raise ArchiveError(f"{zip_path.name}: entries hold more data than their headers declare; "
                                               "refusing the archive.")
                        out.write(chunk)
        except zipfile.BadZipFile as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ArchiveError(f"{zip_path.name} is damaged ({exc}); create the zip again and re-upload it.") from exc
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def dataset_root(folder: str | os.PathLike) -> Path:
    """The data set inside an extracted zip: descends through lone wrapper folders ("export/", "my-set/").

    Stops above a folder named like a split or a split's part (train, valid, images, ...).
    """
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in _LAYOUT_FOLDERS:
            folder = entries[0]
        else:
            return folder


def extract_upload(zip_path: str | os.PathLike, uploads_dir: str | os.PathLike) -> Path:
    """Extract an uploaded data set zip into a fresh folder under `uploads_dir`; returns the data set root."""
    dest = Path(uploads_dir) / f"{Path(zip_path).stem[:40]}-{uuid.uuid4().hex[:8]}"
    return dataset_root(safe_extract_zip(zip_path, dest))


def as_data_path(path: str | os.PathLike, uploads_dir: str | os.PathLike) -> Path:
    """A labelled-set path as given, or, for a .zip, the root of its safely extracted copy."""
    text = str(path).strip()
    if not text:
        raise ValueError("No data set given: tick a shared set, upload a .zip, or type a folder path.")
    p = Path(text).expanduser()
    if p.suffix.lower() == ".zip":
        return extract_upload(p, uploads_dir)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder; check the data set path (it is read on the server).")
    return p


# --------------------------------------------------------------------------------------- model cache


def _default_loader(source: str, precision: str | None):
    from engine.models import load_segmenter

    return load_segmenter(source, precision=precision)


def is_onnx_source(source) -> bool:
    """True for an ONNX export folder (manifest.json), judged from the path alone (no loading, no network)."""
    from engine.models import REPO_ROOT

    p = Path(str(source).strip()).expanduser()
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    return (p / "manifest.json").is_file()


class ModelCache:
    """Loaded segmenters, the `maxsize` most recently used, keyed by (source, precision).

    precision None means the source's default (`engine.models.load_segmenter`): torch models then share the
    entry of their default precision, ONNX exports run at the precision they were exported with.
    `get` loads at most once per key even when several requests ask at the same moment (a lock per key);
    `evict` drops every entry whose source is, or lies inside, a folder (a run that was trained again).
    """

    def __init__(self, maxsize: int = 4, loader: Callable[[str, str], object] | None = None):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}.")
        self.maxsize = maxsize
        self.loader = loader or _default_loader
        self._items: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    @staticmethod
    def key(source, precision: str | None = None) -> tuple[str, str | None]:
        source = str(source).strip() or "auto"
        if precision is None and not is_onnx_source(source):
            from engine.models import DEFAULT_TORCH_PRECISION

            precision = DEFAULT_TORCH_PRECISION
        return (source, precision)

    def get(self, source, precision: str | None = None):
        key = self.key(source, precision)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another request may have loaded it while we waited
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            model = self.loader(*key)
            with self._lock:
                self._items[key] = model
                self._items.move_to_end(key)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return model

    def evict(self, path: str | os.PathLike) -> list[tuple[str, str]]:
        """Drop the entries whose source is `path` or lies inside it; returns the dropped keys."""
        target = _resolved(path)
        with self._lock:
            dropped = [k for k in self._items if k[0] == str(path) or _inside(_resolved(k[0]), target)]
            for k in dropped:
                del self._items[k]
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items


def _resolved(path) -> Path | None:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def _inside(path: Path | None, folder: Path | None) -> bool:
    return path is not None and folder is not None and (path == folder or path.is_relative_to(folder))


def model_choices(checkpoints_dir=None, export_dir=None, *, torch_only: bool = False) -> list[tuple[str, str]]:
    """(label, source) for the pickers (`engine.models.list_models`); torch_only drops ONNX exports."""
    from engine.models import list_models

    choices = list_models(checkpoints_dir, export_dir)
    if torch_only:
        choices = [(label, src) for label, src in choices if not (Path(src) / "manifest.json").is_file()]
    return choices


# --------------------------------------------------------------------------------------- segment


def parse_prompts(text: str | Sequence[str] | None, extra: Iterable[str] = ()) -> list[str]:
    """Prompts from free text (one per line or comma-separated) plus `extra`, stripped, de-duplicated.

    "segment crack, segment taping area" -> ["segment crack", "segment taping area"].
    Raises ValueError when nothing is left.
    """
    items = text if isinstance(text, (list, tuple)) else re.split(r"[\n,;]", text or "")
    out = list(dict.fromkeys(p.strip() for p in [*items, *extra] if p and p.strip()))
    if not out:
        raise ValueError("No prompt given: type what to find (one per line or comma-separated), e.g. "
                         "'segment crack', or click a quick pick.")
    return out


@dataclass
class SegmentResult:
    """Everything the Segment tab shows for one photo.

    photo, overlay, heatmap: RGB PIL images at display size (long side <= DISPLAY_MAX_SIDE); legend: (prompt,
    "#rrggbb") in overlay colour order; rows: [prompt, area %, max score, ms] per prompt; mask_paths: one PNG
    per prompt, `{image_id}__{prompt_slug}.png`, 0/255 at the photo's full displayed size.
    """

    photo: Image.Image
    overlay: Image.Image
    heatmap: Image.Image
    legend: list[tuple[str, str]]
    rows: list[list]
    mask_paths: list[Path]
    threshold: float
    model: str
    ms: float


TABLE_HEADERS = ["prompt", "area %", "max score", "ms"]
DISPLAY_MAX_SIDE = 1600


def image_id_for(path: str | os.PathLike | None) -> str:
    """The mask-file stem for an uploaded photo: its file stem, or "photo" when it has no usable name."""
    if not path:
        return "photo"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(path)).stem).strip("._")
    return stem or "photo"


def _resize_map(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float map -> (size[1], size[0]) bilinear, for display only."""
    if prob.shape[::-1] == tuple(size):
        return prob
    return np.asarray(Image.fromarray(prob.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))


def segment_photo(segmenter, image, prompts: Sequence[str], *, threshold: float | None = None,
                  image_id: str = "photo", out_dir: str | os.PathLike) -> SegmentResult:
    """Segment one photo for several prompts: overlay, heatmap, per-prompt table and mask PNGs.

    image: a path (or anything `engine.images.load_image` reads); threshold: None for the model's own.
    Masks are written to `out_dir` at the photo's full displayed size.
    """
    from engine.draw import blend_heatmap, legend, overlay, side_by_side
    from engine.images import load_image
    from engine.masks import write_masks

    t = segmenter.threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"Threshold {t} is outside [0, 1]; pick a value on the slider.")
    start = time.perf_counter()
    maps = segmenter.predict(image, prompts)
    ms = float(getattr(segmenter, "last_ms", 0.0) or (time.perf_counter() - start) * 1000)
    masks = {p: m >= t for p, m in maps.items()}
    paths = write_masks(masks, image_id, out_dir)

    photo = load_image(image, max_side=DISPLAY_MAX_SIDE)
    shown_maps = {p: _resize_map(m, photo.size) for p, m in maps.items()}
    shown_masks = {p: m >= t for p, m in shown_maps.items()}
    rows = [[p, round(100.0 * float(masks[p].mean()), 2), round(float(maps[p].max()), 3), round(ms, 1)]
            for p in maps]
    heats = [blend_heatmap(photo, m) for m in shown_maps.values()]
    heat = heats[0] if len(heats) == 1 else side_by_side(heats, list(shown_maps))
    return SegmentResult(photo=photo, overlay=overlay(photo, shown_masks), heatmap=heat, legend=legend(masks),
                         rows=rows, mask_paths=paths, threshold=t, model=str(getattr(segmenter, "name", "model")),
                         ms=ms)


# --------------------------------------------------------------------------------------- training

# Fallback slider defaults for when engine.train is not importable (the real ones come from TrainConfig).
TRAIN_DEFAULTS = dict(epochs=10, lr=1e-4, batch_size=8, image_size=352, unfreeze_vision_layers=0,
                      unfreeze_text_layers=0, augment=True, patience=3)


def _train_module():
    try:
        import engine.train as train
    except ImportError as exc:
        raise RuntimeError(f"Training is not available in this installation ({exc}); install the full "
                           "requirements.txt and restart the app.") from exc
    return train


def train_defaults() -> dict:
    """Slider defaults: TrainConfig's own values where the training module is importable."""
    try:
        cfg = _train_module().make_config()
    except Exception as exc:  # the UI still builds; the Train button will then say why
        log.warning("training defaults unavailable (%s); using built-in ones", exc)
        return dict(TRAIN_DEFAULTS)
    return {k: getattr(cfg, k, v) for k, v in TRAIN_DEFAULTS.items()}


def new_run_dir(checkpoints_dir: str | os.PathLike, name: str | None = None) -> Path:
    """checkpoints_dir/<name>, or checkpoints_dir/run-YYYYmmdd-HHMMSS when no name is given."""
    name = (name or "").strip()
    if name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
            raise ValueError(f"Run name {name!r} may use letters, digits, '.', '_' and '-' only (at most 80).")
    else:
        name = time.strftime("run-%Y%m%d-%H%M%S")
    return Path(checkpoints_dir) / name


def start_training(data: Sequence[tuple[str, str | Sequence[str]]], *, out: str | os.PathLike,
                   uploads_dir: str | os.PathLike, cache: ModelCache | None = None, preset: str | None = None,
                   **settings) -> str:
    """Start the background training job; returns its run folder.

    data: (path, prompts) per labelled set; a path ending in .zip is safely extracted first; prompts are
        comma/newline separated text or a list (synonyms of that set's class).
    settings: TrainConfig fields (model, epochs, lr, batch_size, image_size, unfreeze_vision_layers, ...);
        unfrozen layers select the "last_n" recipe unless `train` is given.
    Raises ValueError for missing data or prompts, RuntimeError (`JobRunning`) while another job runs.
    """
    train = _train_module()
    if not data:
        raise ValueError("No training data chosen: tick a shared set, upload a .zip, or type a folder path.")
    specs = []
    for path, prompts in data:
        root = as_data_path(path, uploads_dir)
        specs.append(train.DataSpec(str(root), tuple(parse_prompts(prompts))))
    if "train" not in settings and (settings.get("unfreeze_vision_layers") or settings.get("unfreeze_text_layers")):
        settings["train"] = "last_n"  # unfrozen layers only train in the last_n recipe; else the decoder alone
    cfg = train.make_config(preset, data=specs, out=str(out), **settings)
    run_dir = train.get_job().start(cfg)  # raises JobRunning while another job runs
    if cache is not None:
        cache.evict(run_dir)  # a run trained again must be reloaded
    return str(run_dir)


def training_status() -> dict:
    """The background job's status dict (phase "idle" when training is unavailable or never started)."""
    try:
        train = _train_module()
    except RuntimeError as exc:
        return {"phase": "idle", "epoch": 0, "epochs": 0, "step": 0, "steps": 0, "eta_s": None,
                "message": str(exc), "run_dir": None, "last_metrics": None, "history": [], "error": None}
    return train.get_job().status()


def stop_training() -> dict:
    """Ask the running job to stop (it stops within a step) and return its status."""
    train = _train_module()
    job = train.get_job()
    if not job.running:
        raise ValueError("No training job is running; nothing to stop.")
    job.stop()
    return job.status()


ACTIVE_PHASES = frozenset({"preparing", "caching", "training", "validating"})


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def status_markdown(status: Mapping) -> str:
    """A short progress summary of a training status dict, in Markdown."""
    phase = status.get("phase", "idle")
    lines = []
    if phase == "idle":
        lines.append("**No training job has run yet.** Pick data and settings, then press **Train**.")
    else:
        head = f"**{phase.capitalize()}**"
        if status.get("epochs"):
            head += f" · epoch {status.get('epoch', 0)}/{status['epochs']}"
        if status.get("steps"):
            head += f" · step {status.get('step', 0)}/{status['steps']}"
        if phase in ACTIVE_PHASES:
            head += f" · ETA {format_eta(status.get('eta_s'))}"
        lines.append(head)
    if status.get("message") and phase != "idle":
        lines.append(str(status["message"]))
    metrics = status.get("last_metrics") or {}
    if metrics:
        parts = []
        for prompt, vals in (metrics.get("val") or {}).items():
            if isinstance(vals, Mapping):
                miou, dice = vals.get("miou", float("nan")), vals.get("dice", float("nan"))
                parts.append(f"{prompt}: IoU {miou:.3f}, Dice {dice:.3f}")
        if metrics.get("val_loss") is not None:
            parts.insert(0, f"val loss {metrics['val_loss']:.4f}")
        if parts:
            lines.append("Last validation: " + "; ".join(parts))
    if status.get("run_dir"):
        lines.append(f"Run folder: `{status['run_dir']}`")
    if status.get("error"):
        lines.append(f"**Error:** {status['error']}")
    return "\n\n".join(lines)


def training_view(status: Mapping):
    """(markdown, Plotly figure) for a training status: the summary and `engine.draw.training_curves`."""
    from engine.draw import training_curves

    return status_markdown(status), training_curves(list(status.get("history") or []))


# --------------------------------------------------------------------------------------- compare

COMPARE_HEADERS = ["model", "prompt", "n", "mIoU", "Dice", "precision", "recall", "best thr", "ms/img"]
WORST_HEADERS = ["model", "prompt", "image", "IoU"]
_EVAL_SPLITS = ("valid", "val", "validation", "test", "train")


def open_eval_set(path: str | os.PathLike, prompts: Sequence[str] = (), *, uploads_dir=None, limit: int | None = None):
    """A labelled set for evaluation: a split folder as is; for a root, its valid (else test, else train) split.

    path: a folder, a COCO .json, or (with `uploads_dir`) a .zip; limit: keep the first `limit` images.
    """
    from engine.data import find_splits, open_dataset, split_layout

    p = as_data_path(path, uploads_dir or tempfile.gettempdir())
    split = None
    if p.is_dir() and split_layout(p) is None:
        splits = find_splits(p)
        split = next((s for s in _EVAL_SPLITS if s in splits), next(iter(splits), None))
    ds = open_dataset(p, split=split, prompts=tuple(prompts))
    if len(ds) == 0:
        raise ValueError(f"{p} holds no labelled images; check the folder.")
    if limit and limit > 0 and limit < len(ds):
        ds = ds.subset(range(int(limit)))
    return ds


def read_history(source: str | os.PathLike) -> list[dict]:
    """The metrics.jsonl rows of a training run (given as its folder or its best/ or last/), else []."""
    p = Path(str(source))
    for folder in (p, p.parent) if p.name in ("best", "last") else (p,):
        f = folder / "metrics.jsonl"
        if f.is_file():
            rows = []
            for line in f.read_text().splitlines():
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a crash: the rest still plots
                        continue
            return rows
    return []


@dataclass
class CompareResult:
    """Scores of several models on one labelled set, ready to show.

    rows: COMPARE_HEADERS per (model, prompt); curves: Plotly figure of the runs' validation mIoU;
    gallery: (image, caption) pairs, each image the ground truth and every model's overlay side by side;
    worst: WORST_HEADERS rows; reports: model label -> EvalReport.to_dict().
    """

    rows: list[list]
    curves: object
    gallery: list[tuple[Image.Image, str]]
    worst: list[list]
    reports: dict = field(default_factory=dict)


def model_label(source: str, precision: str = "fp32") -> str:
    """A short name for a (source, precision) pair: folder name (run/best -> run), Hub id or "auto"."""
    p = Path(str(source))
    name = p.parent.name if p.name in ("best", "last") else (p.name if p.is_absolute() or p.exists() else str(source))
    return f"{name} ({precision})" if precision != "fp32" else name


def compare_models(cache: ModelCache, models: Sequence[str], data: str | os.PathLike, prompts: Sequence[str] = (),
                   *, precisions: Sequence[str] = ("fp32",), limit: int | None = None, uploads_dir=None,
                   threshold: float | None = None, n_show: int = 3, k_worst: int = 3) -> CompareResult:
    """Evaluate each model (x each torch precision) on one labelled set and gather tables, curves and overlays.

    ONNX exports run once whatever `precisions` says (their precision is fixed at export). prompts: default to
    the set's own. threshold: None uses each model's calibrated threshold.
    """
    from engine.draw import compare_curves, overlay, side_by_side
    from engine.evaluate import evaluate
    from engine.data import source_photo_id
    from engine.metrics import confusion, iou

    models = [m for m in dict.fromkeys(str(m).strip() for m in models) if m]
    if not models:
        raise ValueError("No model chosen: pick at least one model (two or more to compare).")
    precisions = list(dict.fromkeys(precisions or ["fp32"]))
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise ValueError(f"Precision {p!r} is not one of fp32, bf16.")
    ds = open_eval_set(data, prompts, uploads_dir=uploads_dir, limit=limit)
    prompts = list(prompts) or list(ds.prompts)
    if not prompts:
        raise ValueError("No prompts given and the data set names none: type the prompts to score, "
                         "e.g. 'segment crack'.")

    entries: list[tuple[str, str, object]] = []  # (label, source, segmenter)
    for source in models:
        if is_onnx_source(source):
            entries.append((model_label(source), source, cache.get(source)))
            continue
        for prec in precisions:
            entries.append((model_label(source, prec), source, cache.get(source, prec)))

    rows, worst, reports, curves = [], [], {}, {}
    for label, source, seg in entries:
        report = evaluate(seg, ds, prompts, threshold=threshold, k_worst=k_worst, progress=False)
        reports[label] = report.to_dict()
        for prompt, r in report.prompts.items():
            rows.append([label, prompt, r.n_images, round(r.miou, 3), round(r.dice, 3), round(r.precision, 3),
                         round(r.recall, 3), round(r.best_threshold, 2), round(r.ms_per_image, 1)])
            worst.extend([label, prompt, image_id, round(v, 3)] for image_id, v in r.worst)
        history = read_history(source)
        if history:
            curves[model_label(source)] = history

    # The same photos under every model: the first few, then the ones the models found hardest.
    ids = ds.ids
    hardest = sorted({r[2] for r in worst}, key=lambda i: min(r[3] for r in worst if r[2] == i))
    shown = list(dict.fromkeys([*ids[:n_show], *hardest[:k_worst]]))
    gallery = []
    for image_id in shown:
        index = ids.index(image_id)
        image, gt = ds[index]
        panels, labels, scores = [overlay(image, {"ground truth": gt})], ["ground truth"], []
        for label, _, seg in entries:
            t = seg.threshold if threshold is None else threshold
            masks = {p: m >= t for p, m in seg.predict(image, prompts).items()}
            panels.append(overlay(image, masks))
            labels.append(label)
            scores.append(f"{label} {iou(*confusion(masks[prompts[0]], gt)[:3]):.2f}")
        tag = "sample" if image_id in ids[:n_show] else "hard case"
        caption = f"{tag} {source_photo_id(ds.items[index])} · IoU ({prompts[0]}): {', '.join(scores)}"
        gallery.append((side_by_side(panels, labels), caption))
    worst.sort(key=lambda r: r[3])
    return CompareResult(rows=rows, curves=compare_curves(curves, title="Validation mIoU of the chosen runs"),
                         gallery=gallery, worst=worst, reports=reports)


# --------------------------------------------------------------------------------------- export

EXPORT_HEADERS = ["measure", "value"]


@dataclass
class ExportResult:
    """An export: its folder, manifest, the CLI's parity report, [measure, value] rows, and a zip of the folder."""

    out_dir: Path
    manifest: dict
    report: str
    rows: list[list]
    zip_path: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def time_predict(segmenter, image, prompts: Sequence[str], repeats: int = 3) -> float:
    """Median milliseconds of `segmenter.predict(image, prompts)` after one warm-up call."""
    segmenter.predict(image, prompts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        segmenter.predict(image, prompts)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def export_rows(manifest: Mapping, out_dir: str | os.PathLike) -> list[list]:
    """The figures of an export manifest worth reading: parity, int8 agreement, graph sizes."""
    parity = manifest.get("parity") or {}
    f32 = parity.get("fp32_vs_torch") or {}
    rows = [
        ["source", str(manifest.get("source", "?"))],
        ["input size (px)", manifest.get("input_size")],
        ["vision layers kept", f"{manifest.get('vision_layers_kept')}/{manifest.get('vision_layers_total')}"],
        ["parity sample", f"{parity.get('images', '?')} images x {len(parity.get('prompts') or [])} prompts"],
        ["onnx fp32 vs torch: max |Δ logit|", f"{f32.get('max_abs_logit_diff', float('nan')):.2e} "
                                              f"(limit {parity.get('tolerance', float('nan')):g})"],
        ["onnx fp32 vs torch: mask IoU", round(float(f32.get("mask_iou", float("nan"))), 4)],
    ]
    q = parity.get("int8_vs_fp32")
    if q:
        rows += [["onnx int8 vs fp32: mask IoU (mean)", round(float(q.get("mask_iou", float("nan"))), 4)],
                 ["onnx int8 vs fp32: mask IoU (min)", round(float(q.get("min_mask_iou", float("nan"))), 4)]]
    rows.append(["default precision", manifest.get("default_precision", "fp32")])
    for name in manifest.get("files", {}):
        path = Path(out_dir) / name
        if name.endswith(".onnx") and path.is_file():
            rows.append([f"{name} (MB)", round(path.stat().st_size / 2**20, 1)])
    return rows


def export_model(source: str, export_dir: str | os.PathLike, *, int8: bool = False, cache: ModelCache | None = None,
                 example: str | os.PathLike | None = None, prompts: Sequence[str] = ("segment crack",),
                 zip_dir: str | os.PathLike | None = None, progress: Callable[[float, str], None] | None = None
                 ) -> ExportResult:
    """Export a model to ONNX under `export_dir`, time it against torch on one photo, and zip the folder.

    The folder is export_dir/<model>-<fp32|int8> (an int8 export also holds the fp32 graphs). Rows:
    milliseconds per photo (all `prompts`) on `example` for torch fp32 and each exported precision, then the
    manifest's parity figures and graph sizes.
    """
    try:
        from engine.onnx.export import export_onnx, format_report
        from engine.onnx.runtime import OnnxSegmenter
    except ImportError as exc:
        raise RuntimeError(f"ONNX export is not available in this installation ({exc}); install requirements.txt "
                           "(onnx, onnxruntime, onnxscript) and restart the app.") from exc
    from engine.models import load_segmenter, resolve_source

    resolved = resolve_source(source)
    if resolved.kind == "onnx":
        raise ValueError(f"{source} is already an ONNX export; pick a PyTorch model or training run to export.")
    name = _slug(resolved.label.split("/")[-1] if resolved.kind == "hub" else model_label(str(resolved.path)))
    out_dir = Path(export_dir) / f"{name}-{'int8' if int8 else 'fp32'}"
    manifest = export_onnx(str(resolved.path), out_dir, int8=int8, progress=progress)
    if cache is not None:
        cache.evict(out_dir)  # a re-export replaces the graphs a cached session was reading
    rows = []  # speed first: the parity figures below it are the same on every machine
    if example is not None:
        if progress is not None:
            progress(1.0, "timing torch and onnxruntime on one photo")
        torch_seg = cache.get(source) if cache is not None else load_segmenter(source)
        torch_ms = time_predict(torch_seg, example, prompts)
        rows.append([f"torch fp32 ms / photo ({len(prompts)} prompts)", round(torch_ms, 1)])
        for precision in (["fp32", "int8"] if int8 else ["fp32"]):
            ms = time_predict(OnnxSegmenter(out_dir, int8=precision == "int8"), example, prompts)
            rows.append([f"onnx {precision} ms / photo", round(ms, 1)])
            rows.append([f"onnx {precision} speed-up vs torch", f"{torch_ms / max(ms, 1e-6):.2f}x"])
    rows += export_rows(manifest, out_dir)
    zip_dir = Path(zip_dir or tempfile.mkdtemp(prefix="drywall-export-"))
    zip_dir.mkdir(parents=True, exist_ok=True)
    zip_path = Path(shutil.make_archive(str(zip_dir / out_dir.name), "zip", root_dir=out_dir))
    return ExportResult(out_dir=out_dir, manifest=dict(manifest), report=format_report(manifest, out_dir),
                        rows=rows, zip_path=zip_path)
