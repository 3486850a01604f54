"""The background training job (the app's Train tab): one run at a time, a `JobStatus` snapshot at any moment."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from engine.errors import JobRunning
from engine.train.config import TrainConfig, run_folder
from engine.train.events import (EpochEvent, Event, FailedEvent, FinishedEvent, JobStatus, LogEvent, PhaseEvent,
                                 StepEvent)


class TrainingJob:
    """`train(cfg)` on a background thread; `status()` folds its events into a JobStatus."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._status = JobStatus()
        self._eta_origin: tuple[float, int] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, cfg: TrainConfig, resume: bool = False) -> str:
        """Start `train(cfg)` in the background; returns the run folder. Raises JobRunning if one runs."""
        with self._lock:
            if self.running:
                raise JobRunning(f"a training job is already running ({self._status.run_dir}); "
                                 "wait for it to finish or press Stop first.")
            self._stop = threading.Event()
            run_dir = str(run_folder(cfg))
            self._status = JobStatus(phase="preparing", epochs=cfg.epochs, run_dir=run_dir, started=time.time())
            self._eta_origin = None
            self._thread = threading.Thread(target=self._run, args=(cfg, resume), name="drywall-train", daemon=True)
            self._thread.start()
            return run_dir

    def _run(self, cfg: TrainConfig, resume: bool) -> None:
        # The loop (and torch) load with the first run, so the app can show an idle status without them.
        from engine.train.loop import train

        try:
            train(cfg, self._on_event, self._stop, resume=resume)
        except Exception:  # reported through the FailedEvent
            pass

    def _on_event(self, e: Event) -> None:
        with self._lock:
            self._status = fold_event(self._status, e, self._eta)

    def _eta(self, e: StepEvent, epochs: int) -> float | None:
        """Seconds left: the pace of the training steps seen so far in this job (a resumed run too)."""
        done = (e.epoch - 1) * e.steps + e.step
        now = time.perf_counter()
        if self._eta_origin is None:
            self._eta_origin = (now, done)
            return None
        t0, done0 = self._eta_origin
        return (now - t0) / max(1, done - done0) * (epochs * e.steps - done) if done > done0 else None

    def stop(self) -> None:
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
            s = replace(s, phase="caching")
        elif e.epoch and eta is not None:
            s = replace(s, eta_s=eta(e, s.epochs))
    elif isinstance(e, LogEvent):
        s = replace(s, log=[*s.log, e.message])
    elif isinstance(e, PhaseEvent):
        s = replace(s, phase=e.phase, message=e.message)
    elif isinstance(e, EpochEvent):
        s = replace(s, history=[*s.history, e.record], last_metrics=e.record)
    elif isinstance(e, FinishedEvent):
        kind = "stopped" if e.stopped else "finished"
        s = replace(s, phase=kind, eta_s=0.0, message=f"{kind}: best epoch {e.summary.get('best_epoch')}",
                    summary=e.summary)
    elif isinstance(e, FailedEvent):
        s = replace(s, phase="failed", error=e.error, message=e.error)
    return s


_JOB: TrainingJob | None = None
_JOB_LOCK = threading.Lock()


def get_job() -> TrainingJob:
    """The process's one training job (created on first use)."""
    global _JOB
    with _JOB_LOCK:
        if _JOB is None:
            _JOB = TrainingJob()
        return _JOB
