"""What training reports while it runs (events) and what the background job shows (its status).

`train(cfg, on_event=...)` calls on_event with one of the event types below; the CLI turns them into tqdm
bars and lines, `TrainingJob` folds them into a `JobStatus`, and the app renders that status. Nothing here
imports torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

# Phases a JobStatus can be in; the first four mean the job is still working.
ACTIVE_PHASES = frozenset({"preparing", "caching", "training", "validating"})
PHASES = ("idle", *sorted(ACTIVE_PHASES), "finished", "stopped", "failed")


@dataclass(frozen=True)
class StepEvent:
    """One optimiser step done (or, with caching=True, one view's features cached); step counts from 1."""

    epoch: int
    step: int
    steps: int
    loss: float | None = None
    caching: bool = False


@dataclass(frozen=True)
class PhaseEvent:
    """The run entered a phase ("preparing", "caching", "training" or "validating"); message says what."""

    phase: str
    message: str = ""
    epoch: int = 0


@dataclass(frozen=True)
class LogEvent:
    """A line for the user: an out-of-memory retry, early stopping, a skipped setting."""

    message: str


@dataclass(frozen=True)
class EpochEvent:
    """An epoch ended; record is the row written to metrics.jsonl (epoch, train_loss, val_loss, lr, val, ...)."""

    epoch: int
    record: dict


@dataclass(frozen=True)
class CheckpointEvent:
    """A model folder (best/ or last/) was written."""

    epoch: int
    folder: str


@dataclass(frozen=True)
class FinishedEvent:
    """The run ended: all epochs, early stopping, or Stop (stopped=True); summary is summary.json's content.

    removed: stopped before it saved an epoch, and it left no run folder (the one it had made, if any, was
    deleted): its name is free for a new run.
    """

    epoch: int
    summary: dict
    stopped: bool = False
    removed: bool = False


@dataclass(frozen=True)
class FailedEvent:
    """The run raised; error is the message the user sees ("TypeName: message"), traceback the full one."""

    error: str
    traceback: str = ""


Event = StepEvent | PhaseEvent | LogEvent | EpochEvent | CheckpointEvent | FinishedEvent | FailedEvent


@dataclass
class JobStatus:
    """A snapshot of the background training job (what the Train tab shows).

    eta_s: seconds left, None while it cannot be estimated yet. history: the metrics.jsonl rows so far.
    summary: summary.json's content once the run ended. started: time.time() when it started.
    """

    phase: str = "idle"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    message: str = ""
    run_dir: str | None = None
    last_metrics: dict | None = None
    history: list[dict] = field(default_factory=list)
    error: str | None = None
    log: list[str] = field(default_factory=list)
    summary: dict | None = None
    started: float | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def copy(self) -> JobStatus:
        return copy.deepcopy(self)
