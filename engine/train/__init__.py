"""Training: one `train(cfg)` function, its typed events, and the background job the app runs it in.

    config.py      DataSpec, TrainConfig, PRESETS, make_config, config_from_json
    sampling.py    the opened sets, the epoch order, batches rendered from photos
    features.py    augmented views and the on-disk cache of frozen-backbone features
    model.py       device, precision, which layers learn, the forward passes
    losses.py      segmentation losses;  schedule.py  cosine_lr
    loop.py        train(), train_one_epoch, train_step, validate, calibrate
    checkpoint.py  the run folder: config.json, metrics.jsonl, best/ and last/, summary.json
    events.py      what train() reports, and JobStatus;  job.py  TrainingJob, get_job

A run folder holds config.json, metrics.jsonl, best/ and last/ (Hugging Face folders; last/ also holds the
optimizer, scheduler, scaler and RNG state for resume) and summary.json. Every write is atomic.

`import engine.train` stays light (no torch): the names of the torch modules load on first use.
"""

import importlib

from engine.errors import JobRunning, TrainingStopped
from engine.train.config import PRESETS, DataSpec, TrainConfig, config_from_json, default_data, make_config
from engine.train.events import (
    CheckpointEvent,
    EpochEvent,
    Event,
    FailedEvent,
    FinishedEvent,
    JobStatus,
    LogEvent,
    PhaseEvent,
    StepEvent,
)
from engine.train.job import TrainingJob, get_job

_LAZY = {
    "train": "engine.train.loop",
    "train_one_epoch": "engine.train.loop",
    "train_step": "engine.train.loop",
    "validate": "engine.train.loop",
    "calibrate": "engine.train.loop",
    "STATE_FILE": "engine.train.checkpoint",
}

__all__ = [
    "PRESETS", "DataSpec", "TrainConfig", "config_from_json", "default_data", "make_config",
    "CheckpointEvent", "EpochEvent", "Event", "FailedEvent", "FinishedEvent", "JobStatus", "LogEvent", "PhaseEvent",
    "StepEvent", "TrainingJob", "get_job", "JobRunning", "TrainingStopped",
]
__all__ += list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.train' has no attribute {name!r}")
