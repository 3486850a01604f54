"""Training: config and presets, the cache-equals-forward check, run folders, Stop, resume, atomic saves,
the background job, AMP on the CPU, and a two-process data-parallel run under Accelerate."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPSegForImageSegmentation

from engine.models import load_clipseg, load_segmenter
from engine.train import (
    DataSpec, JobRunning, PRESETS, TrainConfig, TrainingJob, _Trainer, make_config, train,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_cfg(tiny_model_dir, shared_data, tmp_path):
    """A 2-epoch run of the tiny model on 6 real photos of each set (4 for validation)."""

    def make(**overrides):
        values = dict(
            model=str(tiny_model_dir), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
            data=[DataSpec(str(shared_data / "cracks"), ("segment crack", "segment wall crack")),
                  DataSpec(str(shared_data / "joints"), ("segment taping area",))],
        )
        values.update(overrides)
        return make_config("tiny", **values)

    return make


def test_presets_are_small_overrides_and_bad_settings_are_named():
    assert all(len(p) <= 18 for p in PRESETS.values())  # overrides, not copies of the ~40 fields
    cfg = make_config("quick", lr=5e-4)
    assert cfg.epochs == PRESETS["quick"]["epochs"] and cfg.lr == 5e-4 and cfg.batch_size == TrainConfig.batch_size
    with pytest.raises(ValueError, match="Unknown preset"):
        make_config("nope")
    with pytest.raises(ValueError, match="Unknown training setting"):
        make_config(None, learning_rate=1)


def test_cached_loss_equals_hf_forward_loss(tiny_cfg):
    """Augmentation off, fp32 cache: the decoder trained from cached features sees exactly HF's forward."""
    cfg = tiny_cfg(feature_cache=True, augment=False, cache_dtype="float32", batch_size=4)
    trainer = _Trainer(cfg, lambda e: None, threading.Event(), resume=False)
    trainer.setup()
    assert trainer.mode == "cached"
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    state = trainer.rng.getstate()
    trainer.mode = "cached"
    cached = trainer._loss(pairs)
    trainer.rng.setstate(state)  # the same prompt choices for the plain batch
    trainer.mode = "plain"
    plain = trainer._loss(pairs)
    assert abs(cached.item() - plain.item()) <= 1e-4
    assert cached.item() > 0.1


def test_feature_cache_is_reused_across_runs(tiny_cfg, tmp_path):
    first = _Trainer(tiny_cfg(feature_cache=True, cache_views=2), lambda e: None, threading.Event(), resume=False)
    first.setup()
    assert first.cache_built_views == 2 * (6 + 6)  # K views of every training image
    files = sorted(p.name for p in first.cache.dir.iterdir())
    second = _Trainer(tiny_cfg(feature_cache=True, cache_views=2, out=str(tmp_path / "run2")), lambda e: None,
                      threading.Event(), resume=False)
    second.setup()
    assert second.cache_built_views == 0
    assert sorted(p.name for p in second.cache.dir.iterdir()) == files
    acts, mask = second.cache.load(second.digests[0][0], second.views[1])
    assert acts[0].dtype == torch.float32 and mask.shape == (64, 64)


def test_run_folder_is_complete_and_loadable(tiny_cfg, tmp_path):
    events = []
    summary = train(tiny_cfg(), on_event=lambda e: events.append(e))
    run = tmp_path / "run"
    assert {"config.json", "metrics.jsonl", "best", "last", "summary.json"} <= {p.name for p in run.iterdir()}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]["val"]) == {"segment crack", "segment wall crack", "segment taping area"}
    assert {"train_loss", "val_loss", "lr", "seconds"} <= set(rows[0])
    saved = json.loads((run / "summary.json").read_text())
    assert saved["device"] == "cpu" and saved["precision"] == "float32" and saved["trained_parameters"] > 0
    assert saved["best_epoch"] == summary["best_epoch"] in (1, 2)
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    # best/ is a Hugging Face folder: the engine and transformers both load it, with the calibrated threshold.
    seg = load_segmenter(run)
    best_row = rows[saved["best_epoch"] - 1]
    assert seg.threshold == pytest.approx(best_row["threshold"])
    CLIPSegForImageSegmentation.from_pretrained(run / "best")
    kinds = {e.kind for e in events}
    assert {"step", "epoch", "checkpoint", "finished"} <= kinds


def test_select_last_with_a_threshold_set_on_train_photos(tiny_cfg, shared_data, tmp_path):
    """The valid split stays unseen: best/ is the final epoch and its threshold comes from the train sweep."""
    from engine.data import open_dataset
    from engine.evaluate import best_threshold, evaluate

    cracks = DataSpec(str(shared_data / "cracks"), ("segment crack",))
    summary = train(tiny_cfg(epochs=3, select="last", calibrate_on="train", calibration_images=4, data=[cracks]))
    assert summary["best_epoch"] == 3
    seg = load_segmenter(tmp_path / "run")
    photos = open_dataset(cracks.path, split="train", prompts=cracks.prompts)
    sweep = evaluate(seg, photos.subset(range(4)), ["segment crack"], progress=False).prompts["segment crack"].sweep
    assert seg.threshold == pytest.approx(best_threshold(sweep)[0])
    with pytest.raises(ValueError, match="calibrate_on"):
        make_config(None, calibrate_on="test")


def test_step_flops_show_the_work_the_cache_removes(tiny_cfg):
    from engine.train import _step_flops

    trainer = _Trainer(tiny_cfg(feature_cache=True, augment=False), lambda e: None, threading.Event(), resume=False)
    trainer.setup()
    pairs = [(0, 0), (0, 1)]
    trainer.mode = "plain"
    plain = _step_flops(trainer, pairs)
    trainer.mode = "cached"
    cached = _step_flops(trainer, pairs)
    assert plain > 2 * cached > 0


def test_stop_keeps_the_last_finished_epoch(tiny_cfg, tmp_path):
    stop = threading.Event()
    steps_after_stop = []

    def on_event(e):
        if e.kind == "epoch" and e.epoch == 1:
            stop.set()
        elif e.kind == "step" and stop.is_set():
            steps_after_stop.append(e)

    summary = train(tiny_cfg(epochs=5), on_event=on_event, stop=stop)
    assert summary["finished"] is False and summary["epochs_done"] == 1
    assert steps_after_stop == []  # stopped before the next step ran
    meta = json.loads((tmp_path / "run" / "last" / "drywall_qa.json").read_text())
    assert meta["epoch"] == 1


def test_resume_continues_exactly(tiny_cfg, tmp_path):
    straight = train(tiny_cfg(out=str(tmp_path / "straight"), epochs=2))
    stop = threading.Event()
    train(tiny_cfg(out=str(tmp_path / "resumed"), epochs=2),
          on_event=lambda e: stop.set() if e.kind == "epoch" else None, stop=stop)
    resumed = train(tiny_cfg(out=str(tmp_path / "resumed"), epochs=2), resume=True)
    assert straight["epochs_done"] == resumed["epochs_done"] == 2
    a = load_clipseg(tmp_path / "straight" / "last")[0].state_dict()
    b = load_clipseg(tmp_path / "resumed" / "last")[0].state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_without_a_run_says_what_to_do(tiny_cfg):
    with pytest.raises(ValueError, match="Cannot resume"):
        train(tiny_cfg(), resume=True)


SAVER = """
import sys
from engine.models import load_clipseg, save_model_folder
model, tokenizer, _ = load_clipseg(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    model.decoder.film_add.bias.data.fill_(i)
    save_model_folder(model, tokenizer, sys.argv[2], image_size=64, meta={"threshold": 0.5, "i": i})
"""


def test_kill_9_during_saves_leaves_a_loadable_model(tiny_model_dir, tmp_path):
    dst = tmp_path / "best"
    shutil.copytree(tiny_model_dir, dst)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tiny_model_dir), str(dst)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        model, _, _ = load_clipseg(dst)  # raises if the folder were half-written
        meta = json.loads((dst / "drywall_qa.json").read_text())
        assert model.decoder.film_add.bias[0].item() == meta.get("i", model.decoder.film_add.bias[0].item())


def test_job_runs_in_the_background_one_at_a_time_and_stops(tiny_cfg):
    job = TrainingJob()
    job.start(tiny_cfg(epochs=50))
    with pytest.raises(JobRunning, match="a training job is already running"):
        job.start(tiny_cfg(epochs=1))
    deadline = time.time() + 60
    while not job.status()["history"] and time.time() < deadline:
        time.sleep(0.05)
    status = job.status()
    assert status["phase"] in ("training", "validating") and status["epochs"] == 50
    assert {"epoch", "step", "steps", "eta_s", "last_metrics", "history", "run_dir"} <= set(status)
    job.stop()
    assert job.wait(timeout=30)
    final = job.status()
    assert final["phase"] == "stopped"
    assert len(final["history"]) < 50


def test_job_reports_failures_without_raising(tiny_cfg, tmp_path):
    job = TrainingJob()
    job.start(tiny_cfg(data=[DataSpec(str(tmp_path / "missing"), ("segment crack",))]))
    assert job.wait(timeout=30)
    status = job.status()
    assert status["phase"] == "failed" and "missing" in status["error"]


def test_amp_path_runs_on_the_cpu(tiny_cfg):
    """fp16 autocast + GradScaler: the CUDA recipe, exercised on the CPU."""
    summary = train(tiny_cfg(epochs=1, amp=True, amp_dtype="fp16"))
    assert summary["precision"] == "float16"
    assert np.isfinite(summary["best"]["train_loss"])


def test_cuda_oom_halves_the_batch(tiny_cfg, monkeypatch):
    trainer = _Trainer(tiny_cfg(batch_size=4), lambda e: None, threading.Event(), resume=False)
    trainer.setup()
    real_step, calls = trainer._step, []

    def step(pairs):
        calls.append(len(pairs))
        if len(pairs) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real_step(pairs)

    monkeypatch.setattr(trainer, "_step", step)
    loss = trainer._step_with_oom_retry([(0, 0), (0, 1), (0, 2), (0, 3)])
    assert calls == [4, 2, 2] and trainer.batch_size == 2 and np.isfinite(loss)
    assert any("batch size halved to 2" in line for line in trainer.log)


def test_cli_train(tiny_model_dir, shared_data, tmp_path):
    from engine.cli import main

    code = main(["train", "--preset", "tiny", "--model", str(tiny_model_dir), "--out", str(tmp_path / "cli"),
                 "--data", f"{shared_data / 'cracks'}=segment crack,segment wall crack", "--epochs", "1",
                 "--set", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["epochs_done"] == 1


def test_two_process_data_parallel_run(tiny_model_dir, shared_data, tmp_path):
    """`accelerate launch` with two processes (torchrun launcher, gloo on the CPU): rank 0 alone writes."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "engine", "train", "--preset", "tiny", "--model", str(tiny_model_dir), "--out", str(out),
           "--data", f"{shared_data / 'cracks'}=segment crack", "--set", f"cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["finished"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # one writer: no duplicated lines
    assert result.stdout.count("finished: best epoch") == 1
