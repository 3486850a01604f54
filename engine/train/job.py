"""The background training job (the app's Train tab): one run at a time, a `JobStatus` snapshot at any moment.

A job belongs to whoever started it (`owner`, e.g. the browser session): only the owner may stop it. It never
writes into an existing folder (unless resuming) nor into the bundled model's, and a wall-clock limit stops it
like the Stop button does. A stop in any phase ends in "stopped": with the best epoch so far kept, or, before
the first epoch was saved, with the run folder it created removed, so that the run name can be used again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from engine.errors import JobRunning
from engine.paths import STARTER_DIR
from engine.train.config import TrainConfig, run_folder
from engine.train.events import (
    EpochEvent,
    Event,
    FailedEvent,
    FinishedEvent,
    JobStatus,
    LogEvent,
    PhaseEvent,
    StepEvent,
)


class TrainingJob:
    """`train(cfg)` on a background thread; `status()` folds its events into a JobStatus."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._status = JobStatus()
        self._eta_origin: dict[str, tuple[float, int]] = {}  # phase -> (time, steps done) at its first step
        self._owner: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def owner(self) -> str | None:
        """Who started the current (or last) job; None: anyone may stop it (the CLI, a test)."""
        return self._owner

    def start(self, cfg: TrainConfig, resume: bool = False, *, owner: str | None = None,
              time_limit_s: float | None = None) -> str:
        """Start `train(cfg)` in the background; returns the run folder.

        owner: who may stop it; time_limit_s: wall-clock seconds after which it stops as if Stop were pressed.
        Raises JobRunning if one runs, FileExistsError for an existing run folder (unless `resume`) and
        PermissionError for the bundled model's folder.
        """
        run_dir = run_folder(cfg)
        if run_dir.resolve() == STARTER_DIR.resolve():
            raise PermissionError(f"{STARTER_DIR.name!r} is the bundled model and read-only; pick another run name.")
        with self._lock:
            if self.running:
                raise JobRunning(f"a training job is already running ({Path(self._status.run_dir or '').name}); "
                                 "wait for it to finish or press Stop first.")
            if not resume and run_dir.exists():
                raise FileExistsError(f"A run named {run_dir.name!r} already exists and runs are never "
                                      "overwritten; choose another run name.")
            self._stop = threading.Event()
            self._owner = owner
            self._status = JobStatus(phase="preparing", epochs=cfg.epochs, run_dir=str(run_dir), started=time.time())
            self._eta_origin = {}
            self._thread = threading.Thread(target=self._run, args=(cfg, resume, time_limit_s), name="drywall-train",
                                            daemon=True)
            self._thread.start()
            return str(run_dir)

    def _run(self, cfg: TrainConfig, resume: bool, time_limit_s: float | None) -> None:
        # The loop (and torch) load with the first run, so the app can show an idle status without them.
        from engine.train.loop import train

        timer = None
        if time_limit_s:
            timer = threading.Timer(time_limit_s, self._time_up, args=(time_limit_s,))
            timer.daemon = True
            timer.start()
        try:
            train(cfg, self._on_event, self._stop, resume=resume)
        except Exception:  # reported through the FailedEvent
            pass
        finally:
            if timer is not None:
                timer.cancel()

    def _time_up(self, seconds: float) -> None:
        self._on_event(LogEvent(f"wall-clock limit of {seconds / 60:g} min reached: stopping after this step"))
        self._stop.set()

    def _on_event(self, e: Event) -> None:
        with self._lock:
            self._status = fold_event(self._status, e, self._eta)

    def _eta(self, e: StepEvent, epochs: int) -> float | None:
        """Seconds left: the pace of the steps seen so far in this job (a resumed run too). While caching, the
        seconds left of the cache build, at the pace of the views cached so far."""
        phase = "caching" if e.caching else "training"
        done, total = (e.step, e.steps) if e.caching else ((e.epoch - 1) * e.steps + e.step, epochs * e.steps)
        now = time.perf_counter()
        if phase not in self._eta_origin:
            self._eta_origin[phase] = (now, done)
            return None
        t0, done0 = self._eta_origin[phase]
        return (now - t0) / max(1, done - done0) * (total - done) if done > done0 else None

    def stop(self, by: str | None = None) -> None:
        """Ask the job to stop within a step. by: who asks; PermissionError unless the owner (or no owner)."""
        if by is not None and self._owner is not None and by != self._owner:
            raise PermissionError("This training job was started by another visitor; only they can stop it. "
                                  "You can watch its progress here.")
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def status(self) -> JobStatus:
        """A copy of the status: the caller may keep or change it."""
        with self._lock:
            return self._status.copy()


def fold_event(s: JobStatus, e: Event, eta=None) -> JobStatus:
    """The status after event `e`. eta(step_event, epochs) -> seconds left or None (None: no ETA)."""
    if isinstance(e, StepEvent):
        s = replace(s, step=e.step, steps=e.steps, epoch=e.epoch or s.epoch)
        if e.caching:
            s = replace(s, phase="caching", eta_s=eta(e, s.epochs) if eta is not None else None)
        elif e.epoch and eta is not None:
            s = replace(s, eta_s=eta(e, s.epochs))
    elif isinstance(e, LogEvent):
        s = replace(s, log=[*s.log, e.message])
    elif isinstance(e, PhaseEvent):
        s = replace(s, phase=e.phase, message=e.message)
    elif isinstance(e, EpochEvent):
        s = replace(s, history=[*s.history, e.record], last_metrics=e.record)
    elif isinstance(e, FinishedEvent):
        s = replace(s, phase="stopped" if e.stopped else "finished", eta_s=0.0, message=finished_message(e),
                    summary=e.summary)
    elif isinstance(e, FailedEvent):
        s = replace(s, phase="failed", error=e.error, message=e.error)
    return s


def finished_message(e: FinishedEvent) -> str:
    """What the status says when the run ended: finished or stopped, and what it kept."""
    best = e.summary.get("best_epoch")
    if not e.stopped:
        return f"finished: best epoch {best}"
    if e.removed:
        return "stopped before the first epoch finished: nothing was saved, the run name is free again"
    if best:
        return f"stopped: best epoch {best} kept"
    return "stopped before an epoch finished: nothing was saved, the run folder is as it was"


_JOB: TrainingJob | None = None
_JOB_LOCK = threading.Lock()


def get_job() -> TrainingJob:
    """The process's one training job (created on first use)."""
    global _JOB
    with _JOB_LOCK:
        if _JOB is None:
            _JOB = TrainingJob()
        return _JOB
