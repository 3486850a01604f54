"""engine/train/loop.py: the cache-equals-forward check, run folders, Stop, resume, AMP on the CPU, the
out-of-memory retry, and a two-process data-parallel run under Accelerate."""

import json
import os
import random
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import CLIPSegForImageSegmentation

from engine.errors import TrainingStopped
from engine.models import load_clipseg, load_segmenter
from engine.train import CheckpointEvent, DataSpec, EpochEvent, FinishedEvent, LogEvent, StepEvent, make_config, train
from engine.train import features as features_module
from engine.train.checkpoint import RunState
from engine.train.features import ActivationMemo
from engine.train.loop import (
    batch_loss,
    make_batches,
    make_optimiser,
    make_step,
    mean_sweep,
    step_with_oom_retry,
    train_one_epoch,
    validate,
)
from engine.train.model import build_trainee
from engine.train.sampling import DecodedImages, image_batch, open_sets

from train_helpers import REPO_ROOT, tiny_cfg  # noqa: F401  (a fixture)


def _setup(cfg):
    """What train() builds before its first epoch: sets, model, optimiser, state, batches."""
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    state = RunState(batch_size=cfg.batch_size, rng=random.Random(cfg.seed))
    batches, _ = make_batches(trainee, sets, cfg, state.rng, lambda e: None, threading.Event())
    return sets, trainee, make_optimiser(trainee, cfg), state, batches


@pytest.mark.slow
def test_cached_loss_equals_hf_forward_loss(tiny_cfg):
    """Augmentation off, fp32 cache: the decoder trained from cached features sees exactly HF's forward."""
    cfg = tiny_cfg(feature_cache=True, augment=False, cache_dtype="float32", batch_size=4, negative_rate=0.0)
    sets, trainee, _, state, cached_batches = _setup(cfg)
    assert trainee.mode == "cached"
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    rng_state = state.rng.getstate()
    cached = batch_loss(trainee, cached_batches(pairs), cfg)
    state.rng.setstate(rng_state)  # the same prompt choices for the plain batch
    plain_batch = image_batch(pairs, DecodedImages(sets), trainee.tokenizer, trainee.processor, image_size=64,
                              augment=False, rng=state.rng)
    plain = batch_loss(replace(trainee, mode="plain"), plain_batch, cfg)
    assert abs(cached.item() - plain.item()) <= 1e-4
    assert cached.item() > 0.1


@pytest.mark.slow
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
    kinds = {type(e) for e in events}
    assert {StepEvent, EpochEvent, CheckpointEvent, FinishedEvent} <= kinds
    assert [e.record for e in events if isinstance(e, EpochEvent)] == rows
    assert events[-1] == FinishedEvent(2, summary, stopped=False)


@pytest.mark.slow
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


@pytest.mark.slow
def test_thresholds_set_on_held_out_photos(tiny_cfg, shared_data, tmp_path):
    """calibrate_on="holdout": the thresholds come from photos the run never trained on."""
    from engine.calibrate import calibrate_model
    from engine.train.sampling import open_sets

    cracks = DataSpec(str(shared_data / "cracks"), ("segment crack",))
    cfg = tiny_cfg(epochs=2, select="last", holdout_share=0.1, calibrate_on="holdout", calibration_images=4,
                   data=[cracks])
    held = open_sets(cfg)[0]
    train(cfg)
    seg = load_segmenter(tmp_path / "run")
    picked = calibrate_model(seg, [(held.holdout, ["segment crack"])], 4)["segment crack"]
    assert seg.thresholds_for(["segment crack"])["segment crack"] == pytest.approx(picked.threshold)
    assert seg.presence_thresholds_for(["segment crack"])["segment crack"] == pytest.approx(picked.presence_threshold)
    assert not set(held.holdout.ids) & set(held.train.ids)


def test_base_holdout_reads_the_run_a_model_comes_from(tmp_path):
    from engine.train.loop import base_holdout

    run = tmp_path / "base"
    (run / "best").mkdir(parents=True)
    (run / "best" / "config.json").write_text("{}")  # a saved model: its config beside its weights
    (run / "best" / "model.safetensors").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"holdout_share": 0.1}))
    (run / "summary.json").write_text("{}")
    assert base_holdout(str(run)) == base_holdout(str(run / "best")) == 0.1
    (run / "config.json").write_text("{}")  # a run from before holdouts: it trained on every train photo
    assert base_holdout(str(run / "best")) == 0.0
    assert base_holdout(str(tmp_path)) is None and base_holdout("scratch") is None
    assert base_holdout("CIDAS/clipseg-rd64-refined") is None


@pytest.mark.slow
def test_stop_keeps_the_last_finished_epoch(tiny_cfg, tmp_path):
    stop = threading.Event()
    steps_after_stop, finished = [], []

    def on_event(e):
        if isinstance(e, EpochEvent) and e.epoch == 1:
            stop.set()
        elif isinstance(e, StepEvent) and stop.is_set():
            steps_after_stop.append(e)
        elif isinstance(e, FinishedEvent):
            finished.append(e)

    summary = train(tiny_cfg(epochs=5), on_event=on_event, stop=stop)
    assert summary["finished"] is False and summary["epochs_done"] == 1
    assert steps_after_stop == []  # stopped before the next step ran
    assert finished[0].stopped
    meta = json.loads((tmp_path / "run" / "last" / "drywall_qa.json").read_text())
    assert meta["epoch"] == 1


@pytest.mark.slow
def test_a_stop_never_removes_a_folder_the_run_did_not_create(tiny_cfg, tmp_path):
    """Resumed, or started in an existing folder (the CLI allows it): a stop before any epoch leaves it as it was."""
    stop = threading.Event()
    train(tiny_cfg(epochs=1))
    before = {p: p.read_bytes() for p in sorted((tmp_path / "run").rglob("*")) if p.is_file()}
    stop.set()
    events = []
    summary = train(tiny_cfg(epochs=2), on_event=events.append, stop=stop, resume=True)
    assert events[-1] == FinishedEvent(0, summary, stopped=True, removed=False)
    assert {p: p.read_bytes() for p in sorted((tmp_path / "run").rglob("*")) if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("kept")
    train(tiny_cfg(out=str(tmp_path / "other")), on_event=events.append, stop=stop)
    assert not events[-1].removed and (tmp_path / "other" / "notes.txt").read_text() == "kept"


@pytest.mark.slow
def test_validation_stops_between_photos_and_leaves_the_model_training(tiny_cfg):
    cfg = tiny_cfg()
    sets, trainee, _, _, _ = _setup(cfg)
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped, match="stopped while validating"):
        validate(trainee, sets, cfg, stop=stop)
    assert trainee.model.training


@pytest.mark.slow
def test_resume_continues_exactly(tiny_cfg, tmp_path):
    straight = train(tiny_cfg(out=str(tmp_path / "straight"), epochs=2))
    stop = threading.Event()
    train(tiny_cfg(out=str(tmp_path / "resumed"), epochs=2),
          on_event=lambda e: stop.set() if isinstance(e, EpochEvent) else None, stop=stop)
    resumed = train(tiny_cfg(out=str(tmp_path / "resumed"), epochs=2), resume=True)
    assert straight["epochs_done"] == resumed["epochs_done"] == 2
    a = load_clipseg(tmp_path / "straight" / "last")[0].state_dict()
    b = load_clipseg(tmp_path / "resumed" / "last")[0].state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert resumed["source_model"] == "resume:resumed"


def test_resume_without_a_run_says_what_to_do(tiny_cfg):
    events = []
    with pytest.raises(ValueError, match="Cannot resume"):
        train(tiny_cfg(), on_event=events.append, resume=True)
    assert events[-1].error.startswith("ValueError: Cannot resume") and "Traceback" in events[-1].traceback


@pytest.mark.slow
def test_amp_path_runs_on_the_cpu(tiny_cfg):
    """fp16 autocast + GradScaler: the CUDA recipe, exercised on the CPU."""
    summary = train(tiny_cfg(epochs=1, amp=True, amp_dtype="fp16"))
    assert summary["precision"] == "float16"
    assert np.isfinite(summary["best"]["train_loss"])


@pytest.mark.slow
def test_cuda_oom_halves_the_batch(tiny_cfg):
    cfg = tiny_cfg(batch_size=4)
    _, trainee, opt, state, batches = _setup(cfg)
    real_step, calls, events = make_step(trainee, opt, cfg, state, batches, steps_per_epoch=3), [], []

    def step(pairs):
        calls.append(len(pairs))
        if len(pairs) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real_step(pairs)

    loss = step_with_oom_retry(step, [(0, 0), (0, 1), (0, 2), (0, 3)], state, events.append)
    assert calls == [4, 2, 2] and state.batch_size == 2 and np.isfinite(loss)
    assert any("batch size halved to 2" in line for line in state.log)
    assert events == [LogEvent("CUDA out of memory: batch size halved to 2")]
    assert state.global_step == 2


def test_one_epoch_steps_in_batches_and_stops_before_a_step():
    state, seen, events = RunState(batch_size=2, rng=random.Random(0)), [], []
    order = [(0, i) for i in range(5)]
    losses = train_one_epoch(3, order, lambda pairs: seen.append(list(pairs)) or float(len(pairs)), state, 3,
                             events.append, threading.Event())
    assert seen == [order[0:2], order[2:4], order[4:5]] and losses == [2.0, 2.0, 1.0]
    assert events == [StepEvent(3, 1, 3, loss=2.0), StepEvent(3, 2, 3, loss=2.0), StepEvent(3, 3, 3, loss=1.0)]
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped, match="stopped while training epoch 1"):
        train_one_epoch(1, order, lambda pairs: seen.append(pairs) or 0.0, state, 3, events.append, stop)
    assert len(seen) == 3
    assert str(TrainingStopped()) == "training was stopped (Stop pressed or the time limit reached)"


def test_mean_sweep_averages_the_sets_per_threshold():
    assert mean_sweep([{0.3: 0.2, 0.5: 0.4}, {0.3: 0.6, 0.5: 0.0}]) == pytest.approx({0.3: 0.4, 0.5: 0.2})
    assert mean_sweep([]) == {0.5: 0.0}


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("feature_cache", [True, False])
def test_negatives_carry_another_sets_prompt_and_an_empty_target(tiny_cfg, feature_cache):
    """negative_rate: some items are asked for the other set's concept, with an all-zero target; the rest keep
    their own prompt and mask. The same in the cached and the plain mode."""
    cfg = tiny_cfg(feature_cache=feature_cache, negative_rate=0.5, batch_size=12)
    sets, trainee, _, state, batches = _setup(cfg)
    assert trainee.mode == ("cached" if feature_cache else "plain")
    pairs = [(si, i) for si in (0, 1) for i in range(6)]
    negatives = positives = 0
    for _ in range(4):
        batch = batches(pairs)
        for (si, _i), prompt, target in zip(pairs, batch.prompts, batch.target):
            if prompt in sets[si].prompts:
                positives += 1
            else:
                assert prompt in sets[1 - si].prompts
                assert float(target.abs().sum()) == 0.0
                negatives += 1
    assert 10 <= negatives <= 38 and negatives + positives == 48


@pytest.mark.slow
def test_a_frozen_tower_is_run_once_per_validation_photo_and_scores_the_same(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(feature_cache=True)
    sets, trainee, _, _, _ = _setup(cfg)
    plain = validate(trainee, sets, cfg)
    calls = []
    real = features_module.Segmenter.vision_activations
    monkeypatch.setattr(features_module.Segmenter, "vision_activations",
                        lambda self, pv: calls.append(pv.shape[0]) or real(self, pv))
    memo = ActivationMemo()
    first = validate(trainee, sets, cfg, memo)
    n_first = len(calls)
    second = validate(trainee, sets, cfg, memo)
    assert n_first >= 8 and len(calls) == n_first  # the second validation ran the decoder only
    assert len(memo.items) == n_first and memo.bytes > 0
    for val in (first, second):
        assert (val.val, val.val_loss, val.threshold, val.thresholds) == \
            (plain.val, plain.val_loss, plain.threshold, plain.thresholds)
    full = ActivationMemo(max_bytes=0)  # past its budget the memo computes and keeps nothing
    assert torch.equal(full.get(torch.zeros(1), lambda: [torch.ones(3)])[0], torch.ones(3)) and not full.items


@pytest.mark.slow
def test_a_cached_step_in_pieces_is_the_same_step(tiny_cfg, monkeypatch):
    import engine.train.loop as loop

    cfg = tiny_cfg(feature_cache=True, augment=False, cache_dtype="float32", batch_size=6, negative_rate=0.0)
    results = []
    for piece in (100, 4):  # one piece of 6, then pieces of 4 and 2
        monkeypatch.setattr(loop, "CPU_MICRO_BATCH", piece)
        torch.manual_seed(0)
        sets, trainee, opt, state, batches = _setup(cfg)
        loss = loop.train_step(trainee, opt, batches([(0, i) for i in range(6)]), cfg, lr=1e-3)
        results.append((loss, [p.detach().clone() for p in trainee.model.decoder.parameters()]))
    (whole, after_whole), (pieces, after_pieces) = results
    assert pieces == pytest.approx(whole, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after_whole, after_pieces))
    assert any(not torch.equal(a, b) for a, b in zip(after_whole, _setup(cfg)[1].model.decoder.parameters()))


@pytest.mark.slow
def test_inference_size_is_the_size_the_model_validates_calibrates_and_runs_at(tiny_cfg, shared_data, tmp_path):
    """Trained on 64 px views, saved to run at 96 px: its val scores and thresholds are those of 96 px."""
    from engine.data import open_dataset
    from engine.evaluate import best_threshold, evaluate
    from engine.train.sampling import open_sets

    cracks = DataSpec(str(shared_data / "cracks"), ("segment crack",))
    cfg = tiny_cfg(epochs=2, select="last", calibrate_on="train", calibration_images=4, data=[cracks],
                   inference_size=96)
    assert (cfg.image_size, cfg.model_size) == (64, 96)
    train(cfg)
    seg = load_segmenter(tmp_path / "run")
    assert seg.input_size == 96
    meta = json.loads((tmp_path / "run" / "best" / "drywall_qa.json").read_text())
    assert (meta["image_size"], meta["inference_size"]) == (64, 96)
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    val = evaluate(seg, open_sets(cfg)[0].val, ["segment crack"], progress=False).prompts["segment crack"]
    logged = last["val"]["segment crack"]["best_miou"]  # the sweep's best: the same whatever the thresholds
    assert val.best_miou == pytest.approx(logged, abs=1e-5)
    seg.input_size = 64  # the size it trained at scores otherwise
    at_64 = evaluate(seg, open_sets(cfg)[0].val, ["segment crack"], progress=False).prompts["segment crack"]
    assert abs(at_64.best_miou - logged) > 1e-3
    seg.input_size = 96
    photos = open_dataset(cracks.path, split="train", prompts=cracks.prompts).subset(range(4))
    sweep = evaluate(seg, photos, ["segment crack"], progress=False).prompts["segment crack"].sweep
    assert seg.threshold == pytest.approx(best_threshold(sweep)[0])


def test_inference_size_must_fit_the_patch_grid(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="inference_size"):
        make_config(None, inference_size=-1)
    with pytest.raises(ValueError, match="patch size"):
        train(tiny_cfg(inference_size=72))
    assert not (tmp_path / "run" / "config.json").exists()


def test_hard_negatives_weigh_the_photos_where_another_prompt_fires(tiny_cfg):
    """hard_negatives: each train photo's weight as a negative follows how much of it the starting model marks
    for the other set's prompt, measured on its cached view (mean 1 per set)."""
    from engine.train.loop import false_alarm_areas

    cfg = tiny_cfg(feature_cache=True, hard_negatives=1.0, negative_rate=0.5)
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    _, features = make_batches(trainee, sets, cfg, random.Random(0), lambda e: None, threading.Event())
    for s in sets:
        assert s.negative_weights is not None and len(s.negative_weights) == len(s.train)
        assert s.negative_weights.mean() == pytest.approx(1.0)
    last_bias = [p for name, p in trainee.model.decoder.transposed_convolution.named_parameters()
                 if name.endswith("bias")][-1]  # the output layer's
    with torch.no_grad():
        last_bias += 50.0  # the model marks every pixel for every prompt: every photo is a full false alarm
    assert all(a.tolist() == [1.0] * len(s.train) for s, a in zip(sets, false_alarm_areas(trainee, features, sets)))
    with torch.no_grad():
        last_bias -= 100.0  # it marks nothing
    assert all(not a.any() for a in false_alarm_areas(trainee, features, sets))


@pytest.mark.slow
def test_a_concept_set_on_its_train_photos_keeps_its_held_out_photos_found(tiny_cfg, tiny_segmenter):
    from engine.calibrate import calibrate_model
    from engine.train.loop import calibrate
    from engine.train.sampling import open_sets

    sets = open_sets(tiny_cfg(holdout_share=0.1, max_train_images=4))
    assert len(sets[0].holdout) >= 30 > len(sets[1].holdout)  # cracks hold 91 photos out, joints 11
    got = calibrate(tiny_segmenter, sets, 3, "holdout", min_holdout=30)
    want = calibrate_model(tiny_segmenter, [(sets[0].holdout, ["segment crack"]),
                                            (sets[1].train, ["segment taping area"])], 3,
                           unseen={"segment taping area": sets[1].holdout})
    assert got["segment taping area"] == want["segment taping area"] and got["segment taping area"].n_unseen == 3
    assert got["segment crack"] == got["segment wall crack"] == want["segment crack"]
    assert got["segment crack"].n_unseen == 0


def test_a_concept_with_few_held_out_photos_calibrates_on_its_train_photos():
    from engine.train.loop import held_out_or_train

    held, train_photos = list(range(11)), list(range(100))
    assert held_out_or_train({"holdout": held, "train": train_photos}, 30) is train_photos
    assert held_out_or_train({"holdout": held, "train": train_photos}, 10) is held
    assert held_out_or_train({"holdout": None, "train": train_photos}, 0) is train_photos
