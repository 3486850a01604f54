"""engine/train/job.py: the background job runs one at a time, stops, reports failures, and its JobStatus."""

import dataclasses
import functools
import threading
import time

import pytest

from engine.models import load_segmenter
from engine.paths import STARTER_DIR
from engine.train import (
    CheckpointEvent,
    DataSpec,
    EpochEvent,
    FailedEvent,
    FinishedEvent,
    JobRunning,
    JobStatus,
    LogEvent,
    PhaseEvent,
    StepEvent,
    TrainingJob,
    train,
)
from engine.train.job import fold_event

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


@pytest.mark.slow
def test_job_runs_in_the_background_one_at_a_time_and_stops(tiny_cfg):
    job = TrainingJob()
    job.start(tiny_cfg(epochs=50), owner="session-a")
    with pytest.raises(JobRunning, match="a training job is already running"):
        job.start(tiny_cfg(epochs=1))
    deadline = time.time() + 60
    while not job.status().history and time.time() < deadline:
        time.sleep(0.05)
    status = job.status()
    assert status.phase in ("training", "validating") and status.epochs == 50
    assert {"epoch", "step", "steps", "eta_s", "last_metrics", "history", "run_dir"} <= \
        {f.name for f in dataclasses.fields(status)}
    status.history.clear()  # a copy: the job's own status is untouched
    assert job.status().history
    with pytest.raises(PermissionError, match="started by another visitor; only they can stop it"):
        job.stop(by="session-b")
    assert job.running and job.owner == "session-a"
    job.stop(by="session-a")
    assert job.wait(timeout=30)
    final = job.status()
    assert final.phase == "stopped"
    assert len(final.history) < 50
    assert final.summary["finished"] is False
    assert final.message == f"stopped: best epoch {final.summary['best_epoch']} kept"


@pytest.mark.slow
def test_job_reports_failures_without_raising(tiny_cfg, tmp_path):
    job = TrainingJob()
    job.start(tiny_cfg(data=[DataSpec(str(tmp_path / "missing"), ("segment crack",))]))
    assert job.wait(timeout=30)
    status = job.status()
    assert status.phase == "failed" and "missing" in status.error


@pytest.mark.slow
def test_a_wall_clock_limit_stops_the_job_like_stop(tiny_cfg, tmp_path):
    job = TrainingJob()
    job.start(tiny_cfg(epochs=500), time_limit_s=1.0)
    assert job.wait(timeout=60)
    status = job.status()
    assert status.phase == "stopped" and status.epoch < 500 and status.error is None
    assert "wall-clock limit of 0.0166667 min reached: stopping after this step" in status.log
    if status.summary["best_epoch"]:  # an epoch finished within the second: it is kept
        assert status.message == f"stopped: best epoch {status.summary['best_epoch']} kept"
        assert load_segmenter(tmp_path / "run").threshold == pytest.approx(status.summary["best"]["threshold"])
    else:
        assert status.message.startswith("stopped before the first epoch finished")
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_stop_before_the_first_epoch_leaves_no_run_and_frees_its_name(tiny_cfg, tmp_path):
    job = TrainingJob()
    run = job.start(tiny_cfg(epochs=50))
    job.stop()
    assert job.wait(timeout=60)
    status = job.status()
    assert (status.phase, status.error, status.history) == ("stopped", None, [])
    assert status.message == "stopped before the first epoch finished: nothing was saved, the run name is free again"
    assert status.log[-1].startswith("stopped while ")
    assert not (tmp_path / "run").exists()
    assert job.start(tiny_cfg(epochs=1)) == run  # the same name starts again, and trains
    assert job.wait(timeout=60) and job.status().phase == "finished"
    assert load_segmenter(tmp_path / "run").threshold == pytest.approx(job.status().summary["best"]["threshold"])


def _is_phase(phase: str, epoch: int = 0):
    return lambda e: isinstance(e, PhaseEvent) and e.phase == phase and e.epoch >= epoch


# Where Stop is pressed: at the first event `when` holds; the epochs to run; whether an epoch is saved by then;
# the reason the log gives.
STOP_POINTS = {
    "preparing": (_is_phase("preparing"), 3, False, "stopped while reading the data sets"),
    "loading the model": (lambda e: isinstance(e, PhaseEvent) and e.message == "loading the model", 3, False,
                          "stopped while loading the model"),
    "caching": (_is_phase("caching"), 3, False, "stopped while caching features"),
    "training": (lambda e: isinstance(e, StepEvent) and e.epoch == 1, 3, False, "stopped while training epoch 1"),
    "validating": (_is_phase("validating"), 3, False, "stopped while validating"),
    "validating epoch 2": (_is_phase("validating", epoch=2), 3, True, "stopped while validating"),
    "saving the last epoch": (lambda e: isinstance(e, CheckpointEvent), 1, True, "stopped while saving the last epoch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(STOP_POINTS))
def test_a_stop_in_any_phase_ends_stopped_with_a_usable_run_or_none(tiny_cfg, tmp_path, point):
    """The events of a run stopped at `point`, folded into the job's status: "stopped" and why, with best/
    loadable once an epoch was saved, else no run folder at all, so that a new job of that name starts."""
    when, epochs, kept, reason = STOP_POINTS[point]
    stop, events, steps_after_stop = threading.Event(), [], []

    def on_event(e):
        if stop.is_set() and isinstance(e, StepEvent):
            steps_after_stop.append(e)
        events.append(e)
        if when(e):
            stop.set()

    cfg = tiny_cfg(epochs=epochs, feature_cache=point == "caching")
    summary = train(cfg, on_event=on_event, stop=stop)
    status = functools.reduce(fold_event, events, JobStatus(phase="preparing", epochs=epochs))
    assert steps_after_stop == [] and isinstance(events[-1], FinishedEvent)
    assert (status.phase, status.error, status.summary) == ("stopped", None, summary)
    assert status.log[-1] == reason and summary["log"][-1] == reason and summary["finished"] is False
    run, job = tmp_path / "run", TrainingJob()
    if kept:
        assert status.message == "stopped: best epoch 1 kept" and summary["epochs_done"] == 1
        assert load_segmenter(run).threshold == pytest.approx(summary["best"]["threshold"])
        with pytest.raises(FileExistsError, match="A run named 'run' already exists"):
            job.start(cfg)
    else:
        assert status.message == ("stopped before the first epoch finished: nothing was saved, the run name is "
                                  "free again")
        assert not run.exists() and summary["best_epoch"] == 0
        assert job.start(cfg) == str(run) and job.status().active
        job.stop()
        assert job.wait(timeout=60) and job.status().phase == "stopped"


def test_a_job_never_writes_into_an_existing_folder_or_the_bundled_model(tiny_cfg, tmp_path):
    (tmp_path / "run").mkdir()
    job = TrainingJob()
    with pytest.raises(FileExistsError, match="A run named 'run' already exists"):
        job.start(tiny_cfg())
    with pytest.raises(PermissionError, match="'drywall-starter' is the bundled model and read-only"):
        job.start(tiny_cfg(out=str(STARTER_DIR)), resume=True)
    assert not job.running and job.status().phase == "idle"


def test_events_fold_into_the_status():
    s = JobStatus(phase="preparing", epochs=3)
    s = fold_event(s, PhaseEvent("caching", "caching features of 4 views"))
    s = fold_event(s, StepEvent(0, 2, 4, caching=True))
    assert (s.phase, s.step, s.steps, s.epoch, s.message) == ("caching", 2, 4, 0, "caching features of 4 views")
    s = fold_event(s, PhaseEvent("training", "epoch 1/3", 1))
    s = fold_event(s, StepEvent(1, 1, 5, loss=0.7), eta=lambda e, epochs: 42.0)
    assert (s.phase, s.epoch, s.step, s.eta_s) == ("training", 1, 1, 42.0)
    s = fold_event(s, LogEvent("CUDA out of memory: batch size halved to 2"))
    assert s.log == ["CUDA out of memory: batch size halved to 2"] and s.phase == "training"
    record = {"epoch": 1, "train_loss": 0.5}
    s = fold_event(s, EpochEvent(1, record))
    assert s.history == [record] and s.last_metrics == record
    s = fold_event(s, FinishedEvent(1, {"best_epoch": 1}))
    assert (s.phase, s.eta_s, s.message, s.summary) == ("finished", 0.0, "finished: best epoch 1", {"best_epoch": 1})
    assert not s.active
    stopped = fold_event(JobStatus(phase="validating"), FinishedEvent(3, {"best_epoch": 2}, stopped=True))
    assert (stopped.phase, stopped.message) == ("stopped", "stopped: best epoch 2 kept")
    removed = fold_event(JobStatus(phase="caching"), FinishedEvent(0, {"best_epoch": 0}, stopped=True, removed=True))
    assert (removed.phase, removed.message) == \
        ("stopped", "stopped before the first epoch finished: nothing was saved, the run name is free again")
    resumed = fold_event(JobStatus(phase="preparing"), FinishedEvent(0, {"best_epoch": 0}, stopped=True))
    assert resumed.message == "stopped before an epoch finished: nothing was saved, the run folder is as it was"
    failed = fold_event(JobStatus(phase="training"), FailedEvent("ValueError: no data"))
    assert (failed.phase, failed.error, failed.message) == ("failed", "ValueError: no data", "ValueError: no data")


def test_a_new_job_is_idle():
    status = TrainingJob().status()
    assert status == JobStatus() and status.phase == "idle" and not status.active


def test_the_eta_while_caching_is_the_cache_builds_and_training_gets_its_own():
    job = TrainingJob()
    job._eta_origin = {}
    assert job._eta(StepEvent(0, 4, 100, caching=True), 3) is None  # the first view sets the pace's origin
    time.sleep(0.05)
    left = job._eta(StepEvent(0, 14, 100, caching=True), 3)  # 10 views in ~0.05 s: 86 to go
    assert 0.3 < left < 3.0
    assert job._eta(StepEvent(1, 1, 10), 3) is None  # training's pace starts afresh
    s = fold_event(JobStatus(phase="caching"), StepEvent(0, 2, 4, caching=True), eta=lambda e, epochs: 7.0)
    assert (s.phase, s.eta_s) == ("caching", 7.0)
