"""Public mode: what a visitor of a shared app (a Hugging Face Space) may ask for, and the caps on its cost.

Public mode is on when the app runs on a Space (`SPACE_ID` is set) or with `python app.py --public`, off by
default locally. Each cap is a named setting with a public default that an environment variable overrides
(`Limits.ENV` maps field -> variable; docs/public-mode.md lists them). In public mode the handlers refuse:
a server folder, a model not in the pickers' list, more prompts, images, epochs, pixels, layers or batch than
the caps allow; and error messages name no server path (`scrub_paths`). Locally nothing here refuses anything.
Pure functions and dataclasses: no gradio, no torch.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.paths import DEFAULT_SETS, REPO_ROOT
from engine.prompts import parse_prompts

if TYPE_CHECKING:  # engine.train loads torch; this module stays light
    from engine.app.jobs import TrainRequest
    from engine.train.events import JobStatus

__all__ = ["ANOTHER_VISITORS_JOB", "Limits", "PublicSettings", "MODEL_REFUSED", "FOLDER_REFUSED", "allowed_models",
           "check_compare", "check_count", "check_model", "check_training", "public_status", "scrub_paths"]

# One message for every model refused, whatever it names: it must not tell a visitor whether a path exists.
MODEL_REFUSED = ("This model is not offered here: pick one from the model list (the Hub model, the bundled "
                 "model, or a run or export made in this app).")
FOLDER_REFUSED = ("Folders on the server are not available on this public app: tick a shared set or upload "
                  "a .zip (Roboflow YOLOv8 or COCO export).")


@dataclass(frozen=True)
class Limits:
    """The caps of public mode; each field is one named setting (its environment variable in `ENV`).

    Training is sized for a CPU Space (16 GB): at 704 px, batch 64 and 12+12 layers unfrozen a job peaked at
    17.4 GB; at these caps (352 px, batch 16, 4 + 4 layers) one job on the full-size model peaks at 3.3 GB
    (tests/test_app_public_memory.py measures it), leaving room for a concurrent /segment.
    """

    prompts: int = 8  # prompts per /segment or /compare request, and per training set
    train_images: int = 200  # images per training set (the "Images per set" slider; 0 = all is refused)
    epochs: int = 20
    image_size: int = 352  # training image size in pixels
    unfreeze_layers: int = 4  # vision layers, and text layers, unfrozen (each)
    batch_size: int = 16
    train_minutes: float = 30.0  # wall-clock limit of a training job; it then stops and keeps its best epoch
    compare_images: int = 50  # images scored per /compare (0 = all is refused)
    compare_models: int = 4
    batch_photos: int = 20  # photos per /segment_batch request (a zip counts its photos)
    upload_mb: int = 100  # Gradio's max_file_size for every upload
    disk_gb: float = 5.0  # every visitor's files and the feature cache together; idle visitors' go first
    visitor_gb: float = 2.0  # what one visitor may keep (runs, exports, uploads, outputs); their oldest go first
    visitor_idle_min: float = 60.0  # a visitor with no request for this long is no longer live: theirs may go
    set_photos: int = 200  # photos per label set
    label_sets: int = 10  # label sets per visitor

    ENV = {"prompts": "DQA_MAX_PROMPTS", "train_images": "DQA_MAX_TRAIN_IMAGES", "epochs": "DQA_MAX_EPOCHS",
           "image_size": "DQA_MAX_IMAGE_SIZE", "unfreeze_layers": "DQA_MAX_UNFREEZE_LAYERS",
           "batch_size": "DQA_MAX_BATCH_SIZE", "train_minutes": "DQA_MAX_TRAIN_MINUTES",
           "compare_images": "DQA_MAX_COMPARE_IMAGES", "compare_models": "DQA_MAX_COMPARE_MODELS",
           "batch_photos": "DQA_MAX_BATCH_PHOTOS",
           "upload_mb": "DQA_MAX_UPLOAD_MB", "disk_gb": "DQA_MAX_DISK_GB", "visitor_gb": "DQA_MAX_VISITOR_GB",
           "visitor_idle_min": "DQA_VISITOR_IDLE_MIN", "set_photos": "DQA_MAX_SET_PHOTOS",
           "label_sets": "DQA_MAX_SETS"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, each overridden by its environment variable when set (a positive number)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            text = (environ.get(cls.ENV[f.name]) or "").strip()
            if not text:
                continue
            kind = type(f.default)
            try:
                value = kind(text)
            except ValueError:
                kind_name = "whole number" if kind is int else "number"
                raise ValueError(f"{cls.ENV[f.name]}={text!r} is not a {kind_name}; unset it or give a "
                                 f"positive one (default {f.default}).") from None
            if value <= 0:
                raise ValueError(f"{cls.ENV[f.name]}={text!r} must be positive (default {f.default}).")
            values[f.name] = value
        return cls(**values)

    @property
    def max_file_size(self) -> int:
        """Gradio's `launch(max_file_size=...)`, in bytes."""
        return int(self.upload_mb) * 1024 * 1024

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * 1024 ** 3)

    @property
    def visitor_bytes(self) -> int:
        return int(self.visitor_gb * 1024 ** 3)


@dataclass(frozen=True)
class PublicSettings:
    """Whether public mode is on, its caps, and the Hub ids (and `auto`) a visitor may name besides the list."""

    enabled: bool = False
    limits: Limits = field(default_factory=Limits)
    extra_models: tuple[str, ...] = ("CIDAS/clipseg-rd64-refined", "auto")

    ENABLE_ENV = "DQA_PUBLIC"  # "1" turns public mode on anywhere; on a Space SPACE_ID already does
    MODELS_ENV = "DQA_ALLOWED_MODELS"  # comma-separated extra Hub ids (replacing the default two)

    @classmethod
    def from_env(cls, force: bool = False, environ: Mapping[str, str] | None = None) -> PublicSettings:
        """On with `force` (`--public`), on a Space (SPACE_ID) or with DQA_PUBLIC=1; caps from the environment."""
        environ = os.environ if environ is None else environ
        enabled = force or bool(environ.get("SPACE_ID")) or environ.get(cls.ENABLE_ENV, "").lower() in ("1", "true")
        models = tuple(m.strip() for m in (environ.get(cls.MODELS_ENV) or "").split(",") if m.strip())
        settings = cls(enabled=enabled, limits=Limits.from_env(environ))
        return replace(settings, extra_models=models) if models else settings


def check_count(what: str, n: int, cap: int, unit: str) -> None:
    """Raise ValueError naming the cap when n > cap: 'At most 8 prompts per request on this public app (got 9).'"""
    if n > cap:
        raise ValueError(f"{what}: at most {cap} {unit} on this public app (got {n}).")


def check_model(source: str, allowed: Mapping[str, str]) -> str:
    """The source a picker value names, or ValueError(MODEL_REFUSED) for anything not in `allowed`.

    allowed: picker value or label -> source (and each source to itself); the message never depends on `source`.
    """
    text = str(source or "").strip()
    if text not in allowed:
        raise ValueError(MODEL_REFUSED)
    return allowed[text]


def allowed_models(choices: Iterable[tuple[str, str]], extra: Sequence[str] = ()) -> dict[str, str]:
    """value -> source for a public picker: each (label, source) by its label, each extra id by itself.

    A folder is named by its label only ("run: my-run"): its path is refused like any other, so a request
    cannot confirm where the app is installed. Sources that are not paths (`auto`, Hub ids) also name themselves.
    """
    allowed = {name: name for name in extra}
    for label, source in choices:
        allowed[label] = source
        if not Path(source).is_absolute():
            allowed[source] = source
    return allowed


_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+@=-]+/)*[\w.+@=-]+/?")


def scrub_paths(message: str, roots: Iterable[str | os.PathLike] = ()) -> str:
    """`message` without absolute server paths: each becomes its last component ('/srv/x/mini' -> 'mini').

    roots (the app's folders), the repository and the temp dir are replaced first, longest first, so that
    a path under them keeps only what follows; any other absolute path keeps only its last component.
    """
    names = {str(Path(r)) for r in (*roots, REPO_ROOT, tempfile.gettempdir(), Path.home()) if str(r)}
    names |= {str(Path(n).resolve()) for n in names}
    for root in sorted((n for n in names if n not in ("/", ".")), key=len, reverse=True):
        message = re.sub(re.escape(root) + "/", "", message)
        message = re.sub(re.escape(root) + r"(?![\w.-])", "the app's folder", message)
    return _ABS_PATH.sub(lambda m: Path(m.group(0)).name or "a folder", message)


def _scrub_value(value, roots):
    """Strings scrubbed of server paths, recursively through dicts and lists; other values as they are."""
    if isinstance(value, str):
        return scrub_paths(value, roots)
    if isinstance(value, Mapping):
        return {k: _scrub_value(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, roots) for v in value]
    return value


ANOTHER_VISITORS_JOB = "Another visitor's training job is running; yours can start when it ends."


def public_status(status: JobStatus, roots: Iterable[str | os.PathLike] = (), owned: bool = True) -> JobStatus:
    """The job status a public visitor sees: the run folder by its name, every text without server paths.

    owned: False for a job another visitor started: then only how far it is and when it ends (phase, epoch,
    step, ETA), nothing of what it trains on, its run's name, scores or log.
    """
    if not owned:
        return type(status)(phase=status.phase, epoch=status.epoch, epochs=status.epochs, step=status.step,
                            steps=status.steps, eta_s=status.eta_s, started=status.started,
                            message=ANOTHER_VISITORS_JOB if status.active else "")
    return replace(status, run_dir=Path(status.run_dir).name if status.run_dir else None,
                   message=scrub_paths(status.message or "", roots),
                   error=scrub_paths(status.error, roots) if status.error else status.error,
                   log=_scrub_value(list(status.log), roots), summary=_scrub_value(status.summary, roots))


def check_training(request: TrainRequest, limits: Limits) -> None:
    """Refuse a Train tab request (public mode) that names a server folder or goes over a cap, naming the cap."""
    if (request.folder or "").strip():
        raise ValueError(FOLDER_REFUSED)
    images = int(request.max_images or 0)
    if images <= 0:
        raise ValueError(f"Images per set: 0 (all) is not available on this public app; choose 1 to "
                         f"{limits.train_images}.")
    check_count("Images per set", images, limits.train_images, "images per set")
    check_count("Epochs", int(request.epochs), limits.epochs, "epochs")
    check_count("Batch size", int(request.batch_size), limits.batch_size, "images per batch")
    check_count("Image size", int(request.image_size), limits.image_size, "px")
    check_count("Vision layers to unfreeze", int(request.unfreeze_vision_layers), limits.unfreeze_layers, "layers")
    check_count("Text layers to unfreeze", int(request.unfreeze_text_layers), limits.unfreeze_layers, "layers")
    for text in (*request.set_prompts.values(), request.zip_prompts):
        if (text or "").strip():
            check_count("Prompts", len(parse_prompts(text)), limits.prompts, "prompts per set")


def check_compare(n_models: int, data_choice: str, limit: int | None, limits: Limits) -> None:
    """Refuse a Compare request (public mode) on a server folder, or over the model or image caps."""
    if data_choice not in (*DEFAULT_SETS, "zip"):
        raise ValueError(FOLDER_REFUSED)
    check_count("Models", n_models, limits.compare_models, "models per comparison")
    images = int(limit or 0)
    if images <= 0:
        raise ValueError(f"Images: 0 (all) is not available on this public app; choose 1 to {limits.compare_images}.")
    check_count("Images", images, limits.compare_images, "images per comparison")
