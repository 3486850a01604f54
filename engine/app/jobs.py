"""Start, watch and stop the background training job from the Train tab's choices.

`engine.train` is imported on first use (it loads torch; `import app` must not): `start_run` turns a
`TrainRequest` (the tab's widget values) into data specs and TrainConfig fields, then starts the job.
A job belongs to its `owner` (the browser session or logged-in user that started it): only the owner can stop it.
A run never overwrites an existing folder, and the bundled model's folder is read-only: such names are refused.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.data.archive import as_data_path
from engine.data.labelset import is_label_set
from engine.paths import DEFAULT_SETS, STARTER_DIR
from engine.prompts import parse_prompts

if TYPE_CHECKING:
    from engine.models.cache import ModelCache
    from engine.train import TrainConfig
    from engine.train.events import JobStatus

__all__ = ["TrainRequest", "new_run_dir", "train_defaults", "training_data", "training_settings", "start_run",
           "start_teach", "start_training", "training_status", "stop_training", "owns_job"]


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """The Train tab's choices.

    sets: shared set names (keys of engine.paths.DEFAULT_SETS) under the data root; set_prompts: the prompts
    typed for each shared set (empty: its DEFAULT_SETS synonyms); zip_file / folder: the user's own set, each
    with its prompts text (comma or newline separated). max_images: images per set, None or 0 for all.
    """

    model: str
    epochs: int
    lr: float
    batch_size: int
    image_size: int
    unfreeze_vision_layers: int = 0
    unfreeze_text_layers: int = 0
    augment: bool = True
    patience: int = 0
    max_images: int | None = None
    negative_rate: float | None = None  # None: TrainConfig's default
    run_name: str = ""
    sets: Sequence[str] = ()
    set_prompts: Mapping[str, str] = field(default_factory=dict)
    zip_file: str | None = None
    zip_prompts: str = ""
    folder: str = ""
    folder_prompts: str = ""
    label_sets: Sequence[str] = ()  # label set folders (engine.data.labelset): each brings its own prompts


def _train_module():
    try:
        return importlib.import_module("engine.train")
    except ImportError as exc:
        raise RuntimeError(f"Training is not available in this installation ({exc}); install the full "
                           "requirements.txt and restart the app.") from exc


def train_defaults() -> TrainConfig:
    """TrainConfig's defaults (`engine.train.make_config()`): the Train tab's slider values at start."""
    return _train_module().make_config()


def new_run_dir(checkpoints_dir: str | os.PathLike, name: str | None = None) -> Path:
    """checkpoints_dir/<name>, or checkpoints_dir/run-YYYYmmdd-HHMMSS when no name is given.

    Raises ValueError for a name that is not a plain folder name, the bundled model's name, or a folder that
    exists (runs are never overwritten: the user picks another name).
    """
    name = (name or "").strip()
    if name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
            raise ValueError(f"Run name {name!r} may use letters, digits, '.', '_' and '-' only (at most 80).")
    else:
        name = time.strftime("run-%Y%m%d-%H%M%S")
    path = Path(checkpoints_dir) / name
    if name == STARTER_DIR.name or path.resolve() == STARTER_DIR.resolve():
        raise ValueError(f"{name!r} is the bundled model and read-only; choose another run name.")
    if path.exists():
        raise ValueError(f"A run named {name!r} already exists and runs are never overwritten; "
                         "choose another run name.")
    return path


def training_data(request: TrainRequest, data_root: str | os.PathLike) -> list[tuple[str, str | Sequence[str]]]:
    """(path, prompts) per chosen set: the ticked shared sets, then the uploaded zip, then the folder."""
    unknown = [name for name in request.sets or [] if name not in DEFAULT_SETS]
    if unknown:
        raise ValueError(f"Unknown shared set(s) {unknown}; choose from {', '.join(DEFAULT_SETS)}.")
    data: list[tuple[str, str | Sequence[str]]] = [
        (str(Path(data_root) / name), request.set_prompts.get(name) or DEFAULT_SETS[name])
        for name in request.sets or []]
    if request.zip_file:
        data.append((request.zip_file, request.zip_prompts))
    if (request.folder or "").strip():
        data.append((request.folder.strip(), request.folder_prompts))
    data += [(folder, ()) for folder in request.label_sets or []]
    return data


def training_settings(request: TrainRequest, overrides: Mapping | None = None) -> dict:
    """TrainConfig fields for a request, `overrides` applied last.

    A limit of N images per set validates on max(2, N // 4) images per set; unfrozen layers select the
    "last_n" recipe (they only train there; otherwise the decoder trains alone) unless `train` is given.
    """
    limit = int(request.max_images or 0) or None
    settings = dict(model=request.model, epochs=int(request.epochs), lr=float(request.lr),
                    batch_size=int(request.batch_size), image_size=int(request.image_size),
                    unfreeze_vision_layers=int(request.unfreeze_vision_layers),
                    unfreeze_text_layers=int(request.unfreeze_text_layers), augment=bool(request.augment),
                    patience=int(request.patience), max_train_images=limit,
                    max_val_images=limit and max(2, limit // 4))
    if request.negative_rate is not None:
        settings["negative_rate"] = float(request.negative_rate)
    settings.update(overrides or {})
    if "train" not in settings and (settings["unfreeze_vision_layers"] or settings["unfreeze_text_layers"]):
        settings["train"] = "last_n"
    return settings


def start_run(request: TrainRequest, *, data_root: str | os.PathLike, checkpoints_dir: str | os.PathLike,
              uploads_dir: str | os.PathLike, cache: ModelCache | None = None, overrides: Mapping | None = None,
              owner: str | None = None, time_limit_s: float | None = None) -> str:
    """Start the background job for the Train tab's choices; returns the run folder (under checkpoints_dir).

    owner: who may stop it (None: anyone); time_limit_s: the job stops after that many wall-clock seconds.
    """
    return start_training(training_data(request, data_root), out=new_run_dir(checkpoints_dir, request.run_name),
                          uploads_dir=uploads_dir, cache=cache, owner=owner, time_limit_s=time_limit_s,
                          **training_settings(request, overrides))


def start_training(data: Sequence[tuple[str, str | Sequence[str]]], *, out: str | os.PathLike,
                   uploads_dir: str | os.PathLike, cache: ModelCache | None = None, preset: str | None = None,
                   owner: str | None = None, time_limit_s: float | None = None, **settings) -> str:
    """Start the background training job; returns its run folder.

    data: (path, prompts) per labelled set; a path ending in .zip is safely extracted first; prompts are
        comma/newline separated text or a list (synonyms of that set's class).
    settings: TrainConfig fields (model, epochs, lr, batch_size, image_size, unfreeze_vision_layers, ...).
    owner, time_limit_s: as in `TrainingJob.start`.
    Raises ValueError for missing data or prompts, RuntimeError (`JobRunning`) while another job runs,
    FileExistsError for an existing run folder, PermissionError for the bundled model's folder.
    """
    train = _train_module()
    if not data:
        raise ValueError("No training data chosen: tick a shared set or one of your label sets, upload a .zip, or "
                         "type a folder path.")
    specs = []
    for path, prompts in data:
        folder = as_data_path(path, uploads_dir)
        # a label set (an uploaded zip of one too) brings its own prompts; any other set needs them typed
        typed = prompts.strip() if isinstance(prompts, str) else prompts
        own = is_label_set(folder) and not typed
        specs.append(train.DataSpec(str(folder), () if own else tuple(parse_prompts(prompts))))
    cfg = train.make_config(preset, data=specs, out=str(out), **settings)
    run_dir = train.get_job().start(cfg, owner=owner, time_limit_s=time_limit_s)  # JobRunning while one runs
    if cache is not None:
        cache.evict(run_dir)  # a run trained again must be reloaded
    return str(run_dir)


def start_teach(label_sets: Sequence[str | os.PathLike], *, model: str, data_root: str | os.PathLike,
                checkpoints_dir: str | os.PathLike, cache: ModelCache | None = None, overrides: Mapping | None = None,
                owner: str | None = None, time_limit_s: float | None = None, run_name: str = "") -> str:
    """Start the background job with the `teach` preset (engine.train.teach) on label set folders, from `model`
    (a model source); returns the run folder. A run name is made from the first set's when none is given."""
    from engine.train.teach import teach_config

    train = _train_module()
    name = (run_name or "").strip()
    if not name and label_sets:
        name = f"{Path(label_sets[0]).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = new_run_dir(checkpoints_dir, name)
    cfg = teach_config(label_sets, model=model, out=str(out), data_root=data_root, **dict(overrides or {}))
    run_dir = train.get_job().start(cfg, owner=owner, time_limit_s=time_limit_s)
    if cache is not None:
        cache.evict(run_dir)
    return str(run_dir)


def training_status() -> JobStatus:
    """The background job's status (phase "idle" when it never started)."""
    return _train_module().get_job().status()


def stop_training(by: str | None = None) -> JobStatus:
    """Ask the running job to stop (it stops within a step) and return its status.

    by: who asks; PermissionError when the job has another owner (others only watch it).
    """
    job = _train_module().get_job()
    if not job.running:
        raise ValueError("No training job is running; nothing to stop.")
    job.stop(by)
    return job.status()


def owns_job(viewer: str | None) -> bool:
    """True when `viewer` may stop the current (or last) job: it started it, or the job has no owner."""
    owner = _train_module().get_job().owner
    return owner is None or owner == viewer
