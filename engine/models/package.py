"""A training run as a Hugging Face model folder to keep or share: the folder, and a zip of it to download.

The folder holds the run's best model (config.json, model.safetensors, tokenizer, preprocessor_config.json,
drywall_qa.json with the calibrated thresholds), the model card README.md (`engine.modelcard.run_card`: YAML
metadata for the Hub, metrics, data, training settings), metrics.jsonl (every epoch) and training_config.json
(the run's TrainConfig: `config.json` is the model's, as `from_pretrained` expects). So

    CLIPSegForImageSegmentation.from_pretrained("my-run")   # after unzipping my-run.zip
    unzip my-run.zip -d checkpoints/                         # and the app lists "run: my-run"

both work. `engine.hub` uploads the same folder. No gradio here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelSourceError
from engine.fileio import rewrite_text_files
from engine.modelcard import run_card
from engine.paths import REPO_ROOT, is_model_folder, is_onnx_export

__all__ = ["TRAINING_CONFIG", "RunFolder", "find_run", "package_run", "zip_run"]

TRAINING_CONFIG = "training_config.json"  # the run's config.json (TrainConfig), renamed beside the model's
RUN_FILES = {"metrics.jsonl": "metrics.jsonl", "config.json": TRAINING_CONFIG}  # run file -> name in the folder


@dataclass(frozen=True)
class RunFolder:
    """What a model source names on disk: `model` the Hugging Face folder to ship (a run's best/, else last/,
    else the folder itself), `run` the training run above it (None for a plain model folder), `name` its name."""

    model: Path
    run: Path | None
    name: str


def find_run(source: str | os.PathLike) -> RunFolder:
    """The run (or model folder) a picker value or CLI argument names; ValueError for anything else.

    Only local folders are packaged: a Hub id, `auto` and an ONNX export are refused, each with what to do.
    """
    path = Path(str(source)).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.is_dir():
        raise ModelSourceError(f"{source!r} is not a training run or model folder here; pick a run from the list "
                               "(`checkpoints/NAME`). Hub models are downloaded from the Hub itself.")
    path = path.resolve()
    if is_onnx_export(path):
        raise ModelSourceError(f"{path.name} is an ONNX export; download it from the Export tab (a zip of the "
                               "export), or pick the training run it came from.")
    for sub in ("best", "last"):
        if is_model_folder(path / sub):
            return RunFolder(model=path / sub, run=path, name=path.name)
    if path.name in ("best", "last") and is_model_folder(path) and (path.parent / "config.json").is_file():
        return RunFolder(model=path, run=path.parent, name=path.parent.name)
    if is_model_folder(path):
        return RunFolder(model=path, run=None, name=path.name)
    raise ModelSourceError(f"{path.name} holds no saved model yet (no best/ or last/); wait for the run's first "
                           "epoch to finish, or pick another run.")


def package_run(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                scrub: Callable[[str], str] | None = None) -> Path:
    """Write the Hugging Face folder of a run into out_dir/<run name>/ and return it (see the module doc).

    A plain model folder (no run around it, e.g. a download unzipped into checkpoints/) is copied as it is,
    its own README.md included. scrub: applied to every text file of the folder (a public app's removal of
    server paths from the card, training_config.json, metrics and settings).
    """
    found = find_run(source)
    dest = Path(out_dir) / found.name
    if dest.exists():
        raise FileExistsError(f"{dest} exists; package into an empty folder.")
    shutil.copytree(found.model, dest, ignore=shutil.ignore_patterns("optimizer*", "scheduler*", "*.pt", ".*"))
    if found.run is not None:
        for name, target in RUN_FILES.items():
            if (found.run / name).is_file():
                shutil.copy2(found.run / name, dest / target)
        (dest / "README.md").write_text(run_card(found.run, found.name))
    if scrub is not None:
        rewrite_text_files(dest, scrub)
    return dest


def zip_run(source: str | os.PathLike, zip_dir: str | os.PathLike, *,
            scrub: Callable[[str], str] | None = None) -> Path:
    """zip_dir/<run name>.zip holding one folder, <run name>/, the run's Hugging Face folder (`package_run`).

    The folder is built in a temporary folder under zip_dir and removed once zipped (models are stored, not
    deflated: safetensors barely compress). scrub: as in `package_run`.
    """
    zip_dir = Path(zip_dir)
    zip_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=zip_dir, prefix=".package-") as tmp:
        folder = package_run(source, tmp, scrub=scrub)
        zip_path = zip_dir / f"{folder.name}.zip"
        with zipfile.ZipFile(zip_path, "w") as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    kind = zipfile.ZIP_STORED if file.suffix in (".safetensors", ".bin") else zipfile.ZIP_DEFLATED
                    archive.write(file, f"{folder.name}/{file.relative_to(folder)}", compress_type=kind)
    return zip_path
