"""The run folder: config.json, metrics.jsonl, best/ and last/ model folders, summary.json.

best/ and last/ are Hugging Face folders written by `engine.models.save_model_folder` (the one writer, atomic);
last/ also holds training_state.pt (optimizer, scheduler, scaler, counters and RNG states) for --resume.
Under data parallelism only the first process calls the writers here.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.fileio import append_line, atomic_write_json, read_jsonl
from engine.models import save_model_folder
from engine.paths import portable
from engine.train.config import TrainConfig, config_from_json
from engine.train.model import Trainee

STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class Optimiser:
    """What updates the weights: AdamW, the fp16 GradScaler (disabled otherwise), and the plateau scheduler
    (None with the cosine schedule, whose rate `train_step` sets every step)."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None


@dataclass
class RunState:
    """What changes while a run goes, and what --resume restores.

    best_score: the best validation score so far (-1 before the first epoch); bad_epochs: epochs since it
    improved; batch_size: the live batch size (halved on CUDA out-of-memory); history: metrics.jsonl rows.
    """

    batch_size: int
    rng: random.Random
    start_epoch: int = 1
    global_step: int = 0
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def start_run_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """A fresh run: the folder, config.json (asdict(cfg)), and no metrics.jsonl left from an earlier run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    saved = dataclasses.asdict(cfg)
    for spec in saved["data"]:  # the data roots as a clone elsewhere finds them (config_from_json reads them back)
        spec["path"] = portable(spec["path"])
    atomic_write_json(run_dir / "config.json", saved)


def resume_config(run_dir: Path, cfg: TrainConfig) -> TrainConfig:
    """The saved config of the run in run_dir, with cfg.epochs (a run may be extended).

    Raises ValueError when run_dir/last holds no training state to resume from.
    """
    last = run_dir / "last"
    if not (last / STATE_FILE).is_file():
        raise ValueError(f"Cannot resume: {last} has no {STATE_FILE}. Start a new run instead (drop --resume).")
    saved = config_from_json(run_dir / "config.json")
    saved.epochs = cfg.epochs
    return saved


def append_metrics(run_dir: Path, record: dict) -> None:
    append_line(run_dir / METRICS_FILE, json.dumps(record))


def read_history(run_dir: Path, before_epoch: int) -> list[dict]:
    """metrics.jsonl rows of the epochs before `before_epoch` (a broken last line is skipped)."""
    return [row for row in read_jsonl(run_dir / METRICS_FILE) if row["epoch"] < before_epoch]


def model_meta(val, epoch: int, prompts: list[str], run_name: str, image_size: int,
               inference_size: int | None = None) -> dict:
    """drywall_qa.json of a checkpoint: the calibrated threshold(s), the prompts, the epoch's val scores, the
    training image size and the size the model runs at (its preprocessor config's)."""
    return {"threshold": val.threshold, "prompts": prompts, "thresholds": val.thresholds,
            "presence_thresholds": val.presence_thresholds,
            "val": {p: {k: r[k] for k in ("miou", "dice", "best_miou")} for p, r in val.val.items()},
            "epoch": epoch, "run": run_name, "image_size": image_size, "inference_size": inference_size or image_size}


def training_state(opt: Optimiser, state: RunState, epoch: int) -> dict:
    """Everything --resume needs besides the weights: optimizer, scheduler, scaler, counters, RNG states."""
    return {
        "epoch": epoch, "global_step": state.global_step, "optimizer": opt.optimizer.state_dict(),
        "plateau": opt.plateau.state_dict() if opt.plateau else None, "scaler": opt.scaler.state_dict(),
        "best_miou": state.best_score, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "batch_size": state.batch_size, "rng_python": state.rng.getstate(),
        "rng_torch": torch.get_rng_state(), "rng_numpy": np.random.get_state(),
    }


def save_checkpoint(folder: Path, model, tokenizer, *, image_size: int, meta: dict,
                    state: dict | None = None) -> Path:
    """Write a model folder atomically; with `state` (see `training_state`) also training_state.pt in it."""
    extra = None if state is None else (lambda tmp: torch.save(state, tmp / STATE_FILE))
    return save_model_folder(model, tokenizer, folder, image_size=image_size, meta=meta, extra=extra)


def restore_state(run_dir: Path, opt: Optimiser, state: RunState) -> None:
    """Load last/training_state.pt into opt and state (RNGs too) and the history of the epochs it covers."""
    saved = torch.load(run_dir / "last" / STATE_FILE, weights_only=False)
    opt.optimizer.load_state_dict(saved["optimizer"])
    if opt.plateau and saved["plateau"]:
        opt.plateau.load_state_dict(saved["plateau"])
    opt.scaler.load_state_dict(saved["scaler"])
    state.start_epoch = saved["epoch"] + 1
    state.global_step, state.best_score = saved["global_step"], saved["best_miou"]
    state.best_epoch, state.bad_epochs, state.batch_size = saved["best_epoch"], saved["bad_epochs"], saved["batch_size"]
    state.rng.setstate(saved["rng_python"])
    torch.set_rng_state(saved["rng_torch"])
    np.random.set_state(saved["rng_numpy"])
    state.history = read_history(run_dir, state.start_epoch)


def run_summary(run_dir: Path, state: RunState, trainee: Trainee, *, finished: bool, seconds: float,
                processes: int, cache=None) -> dict:
    """summary.json's content: how the run ended, its best epoch and score, and where and how it ran."""
    amp = trainee.amp_dtype
    summary = {
        "run": run_dir.name, "run_dir": portable(run_dir), "finished": finished,
        "best_epoch": state.best_epoch, "best_score": state.best_score,
        "best": next((r for r in state.history if r["epoch"] == state.best_epoch), None),
        "epochs_done": len(state.history), "total_seconds": round(seconds, 1),
        "device": str(trainee.device), "precision": str(amp).replace("torch.", "") if amp else "float32",
        "precision_reason": trainee.precision_reason,
        "mode": trainee.mode, "trained_parameters": trainee.n_trainable, "processes": processes,
        "torch": torch.__version__, "source_model": trainee.source, "log": state.log,
    }
    if cache is not None:  # the run trained from a feature cache (engine.train.features.CachedFeatures)
        summary["cache_build_seconds"] = round(cache.build_seconds, 2)
        summary["cache_views_built"] = cache.built_views
        summary["cache_precision"] = cache.precision
    return summary


def write_summary(run_dir: Path, summary: dict) -> dict:
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary
