"""The training loop: `train(cfg)` runs one job in the caller's thread and returns its summary.

Read top to bottom: `train` opens the data, builds the model and optimiser (or restores them with resume),
then per epoch `train_one_epoch` (steps through `make_step`, with the out-of-memory retry), `validate`
(the engine's own evaluation, plus `calibrate` for the threshold), and the run folder's writers in
checkpoint.py. Progress goes out as typed events (events.py); the loop never prints.
Thread counts are the entry point's business (`python -m engine train` applies cfg.threads).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.calibrate import MIN_FOUND, PromptCalibration, calibrate_model
from engine.errors import TrainingStopped
from engine.evaluate import best_threshold, evaluate
from engine.models.io import image_processor
from engine.paths import in_repo, portable
from engine.segmenter import Segmenter, normalise
from engine.train.checkpoint import (
    Optimiser,
    RunState,
    append_metrics,
    model_meta,
    restore_state,
    resume_config,
    run_summary,
    save_checkpoint,
    start_run_folder,
    training_state,
    write_summary,
)
from engine.train.config import TrainConfig, run_folder
from engine.train.events import (
    CheckpointEvent,
    EpochEvent,
    Event,
    FailedEvent,
    FinishedEvent,
    LogEvent,
    PhaseEvent,
    StepEvent,
)
from engine.train.features import (
    IDENTITY,
    ActivationMemo,
    CachedFeatures,
    FrozenTowerSegmenter,
    build_feature_cache,
    cached_views,
    render_view,
)
from engine.train.losses import segmentation_loss
from engine.train.model import Trainee, batch_logits, build_trainee, make_accelerator, resolve_device
from engine.train.sampling import (
    CachedBatch,
    DecodedImages,
    Pair,
    TrainSet,
    cached_batch,
    concept_groups,
    epoch_order,
    group_prompts,
    hard_negative_weights,
    image_batch,
    joined_split,
    negative_rate_at,
    open_sets,
    shard,
)
from engine.train.schedule import cosine_lr
from engine.train.selection import judge_epoch


def train(cfg: TrainConfig, on_event: Callable[[Event], None] | None = None, stop: threading.Event | None = None,
          *, resume: bool = False) -> dict:
    """Run one training job in the caller's thread; returns the run summary (also in summary.json).

    on_event gets the events of engine.train.events. `stop.set()` ends the run within one step (or one photo of
    validation, or one batch of the feature cache) in whatever phase it is, and the run ends with
    FinishedEvent(stopped=True): a run that saved an epoch keeps its best/ and last/ folders; one that saved none
    has its run folder removed again if it created it (removed=True: the name is free for a new run), while a
    resumed run's folder is left as it was. resume: continue cfg.out from last/.
    Errors are reported as a FailedEvent and re-raised.
    """
    on_event = on_event or (lambda event: None)
    stop = stop or threading.Event()
    try:
        return _train(cfg, on_event, stop, resume)
    except Exception as exc:
        on_event(FailedEvent(f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise


def _train(cfg: TrainConfig, on_event: Callable[[Event], None], stop: threading.Event, resume: bool) -> dict:
    start = time.perf_counter()
    run_dir = run_folder(cfg)
    accelerator = make_accelerator()
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = accelerator is None or accelerator.is_main_process  # only the first process writes the run folder
    creates_folder = is_main and not resume and not run_dir.exists()  # only such a folder is removed on a stop
    state, trainee, cache, stopped, epoch = None, None, None, False, 0
    try:
        # 1. Data and model: a fresh start, or the saved config, weights and state of the run being resumed.
        on_event(PhaseEvent("preparing", "reading data sets"))
        sets = open_sets(cfg)
        check_stop(stop, "reading the data sets")
        if resume:
            cfg = resume_config(run_dir, cfg)
        else:
            torch.manual_seed(cfg.seed)
        on_event(PhaseEvent("preparing", "loading the model"))
        trainee = build_trainee(cfg, resolve_device(cfg), resume_from=run_dir / "last" if resume else None)
        check_stop(stop, "loading the model")
        patch = trainee.model.config.vision_config.patch_size
        if cfg.model_size % patch:
            setting = "inference_size" if cfg.inference_size else "image_size"
            raise ValueError(f"{setting} {cfg.model_size} is not a multiple of the model's patch size ({patch} px); "
                             f"try {max(patch, round(cfg.model_size / patch) * patch)}.")
        opt = make_optimiser(trainee, cfg)
        state = RunState(batch_size=cfg.batch_size, rng=random.Random(cfg.seed))
        if resume:
            restore_state(run_dir, opt, state)
        elif is_main:
            start_run_folder(run_dir, cfg)
        if trainee.precision_reason and not resume:
            note(state, on_event, f"training precision {trainee.precision_reason}")
        steps_per_epoch = math.ceil(sum(len(s.train) for s in sets) / state.batch_size / world)
        for s in sets:
            if s.spec.val_split == "train":
                note(state, on_event, f"{s.prompts[0]}: {len(s.train)} photos, too few to hold any out; its scores "
                                      "are on its training photos, not on unseen ones")
        if cfg.calibrate_on == "holdout":
            for group in concept_groups(sets):
                held = sum(len(sets[k].holdout or ()) for k in group)
                if held < cfg.holdout_min_photos:
                    floor = f", its presence threshold low enough to find {MIN_FOUND:.0%} of its held-out ones" \
                        if held else ""
                    note(state, on_event, f"{sets[group[0]].prompts[0]}: {held} held-out photos, fewer than "
                                          f"{cfg.holdout_min_photos}: its thresholds are set on its train photos"
                                          + floor)
        if cfg.negative_rate > 0 and len(sets) == 1:
            note(state, on_event, "one data set: no absent-concept negatives (they pair a photo with another "
                                  "set's prompt)")
        if cfg.holdout_share and (base := base_holdout(cfg.model)) is not None and base != cfg.holdout_share:
            note(state, on_event, f"the model this run starts from was trained with holdout_share={base}: it has seen "
                                  "photos this run holds out, so thresholds set on them run optimistic")
        total_steps = steps_per_epoch * cfg.epochs
        batches, cache = make_batches(trainee, sets, cfg, state.rng, on_event, stop,
                                      rate=lambda: negative_rate_at(cfg, state.global_step, total_steps))
        step = make_step(trainee, opt, cfg, state, batches, steps_per_epoch=steps_per_epoch, accelerator=accelerator)

        memo = ActivationMemo() if trainee.mode == "cached" else None  # validation's frozen-tower activations
        kept = kept_thresholds(cfg, sets)
        calibration = None

        # 2. The epochs.
        trainee.model.train()
        epoch = state.start_epoch - 1
        for epoch in range(state.start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            on_event(PhaseEvent("training", f"epoch {epoch}/{cfg.epochs}", epoch))
            order = epoch_order([len(s.train) for s in sets], cfg.set_balance, state.rng)
            if accelerator is not None:  # each process takes an equal share of the epoch
                order = shard(order, world, accelerator.process_index)
            losses = train_one_epoch(epoch, order, step, state, steps_per_epoch, on_event, stop)
            on_event(PhaseEvent("validating", f"validating epoch {epoch}", epoch))
            due = epoch in (1, cfg.epochs) or epoch % cfg.calibrate_every == 0 or calibration is None
            val = validate(trainee, sets, cfg, memo, stop=stop, previous=None if due else calibration, kept=kept)
            calibration = val.calibration
            lr = opt.optimizer.param_groups[0]["lr"]
            if opt.plateau is not None:
                opt.plateau.step(val.score)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                      "val_loss": val.val_loss, "lr": lr, "val": val.val, "threshold": val.threshold,
                      "score": val.score, "seconds": round(time.perf_counter() - t0, 2)}
            state.history.append(record)
            verdict = judge_epoch(state, epoch, val.score, select=cfg.select, patience=cfg.patience)
            if is_main:  # not stopped part-way: an epoch's checkpoints are written whole
                append_metrics(run_dir, record)
                prompts = list(dict.fromkeys(p for s in sets for p in s.prompts))
                meta = model_meta(val, epoch, prompts, run_dir.name, cfg.image_size, cfg.model_size)
                for folder in (["best"] if verdict.keep else []) + ["last"]:
                    save_checkpoint(run_dir / folder, trainee.model, trainee.tokenizer, image_size=cfg.model_size,
                                    meta=meta, state=training_state(opt, state, epoch) if folder == "last" else None)
                    on_event(CheckpointEvent(epoch, str(run_dir / folder)))
                write_summary(run_dir, run_summary(run_dir, state, trainee, finished=False, processes=world,
                                                   seconds=time.perf_counter() - start, cache=cache))
            if accelerator is not None:
                accelerator.wait_for_everyone()
            on_event(EpochEvent(epoch, record))
            if verdict.stop:
                note(state, on_event, f"early stop: no better val mIoU for {cfg.patience} epochs")
                break
        check_stop(stop, "saving the last epoch")  # Stop pressed while the last epoch saved: it ran, but stopped
    except TrainingStopped as exc:  # the reason ("stopped while caching features") goes into the log
        stopped, log = True, state.log if state is not None else []
        log.append(str(exc))
        on_event(LogEvent(str(exc)))
    if stopped and (state is None or not state.best_epoch):
        summary, removed = stopped_unsaved(run_dir, remove=creates_folder, seconds=time.perf_counter() - start,
                                           log=log)
        on_event(FinishedEvent(epoch, summary, stopped=True, removed=removed))
        return summary
    summary = run_summary(run_dir, state, trainee, finished=not stopped, processes=world,
                          seconds=time.perf_counter() - start, cache=cache)
    if is_main:
        write_summary(run_dir, summary)
    on_event(FinishedEvent(epoch, summary, stopped=stopped))
    return summary


def check_stop(stop: threading.Event | None, doing: str) -> None:
    """Raise TrainingStopped("stopped while <doing>") once `stop` is set (None: never)."""
    if stop is not None and stop.is_set():
        raise TrainingStopped(f"stopped while {doing}")


def stopped_unsaved(run_dir: Path, *, remove: bool, seconds: float, log: list[str]) -> tuple[dict, bool]:
    """(summary, removed) of a run stopped before it saved an epoch: there is no model to keep.

    remove: run_dir did not exist when the run started (it is no resumed run's nor any other existing folder),
    so whatever the run made there is deleted and its name is free again (removed=True); otherwise the folder
    is left as it was and no summary.json is written into it.
    """
    if remove and run_dir.is_dir():
        shutil.rmtree(run_dir)
    summary = {"run": run_dir.name, "run_dir": portable(run_dir), "finished": False, "best_epoch": 0,
               "best_score": -1.0, "best": None, "epochs_done": 0, "total_seconds": round(seconds, 1), "log": log}
    return summary, remove


def base_holdout(model: str) -> float | None:
    """The holdout_share of the local training run that `model` (its folder, best/ or last/) comes from; None
    when it is no such run (scratch, a Hub id, a plain model folder)."""
    from engine.errors import ModelSourceError
    from engine.models.package import find_run

    if model in ("scratch", "auto"):
        return None
    try:
        run = find_run(in_repo(model)).run
    except ModelSourceError:
        return None
    if run is None or not (run / "config.json").is_file():
        return None
    return float(json.loads((run / "config.json").read_text()).get("holdout_share", 0.0))


def note(state: RunState, on_event: Callable[[Event], None], message: str) -> None:
    """A line for the user: kept in the run's log (summary.json) and sent as a LogEvent."""
    state.log.append(message)
    on_event(LogEvent(message))


# ---------------------------------------------------------------------------------------------------------
# Steps


# Cached-mode steps on the CPU run their batch in pieces of at most this many images (see `train_step`): the
# full-size decoder (352 px, 2 threads) ran at 0.028 s per image in batches of 8 against 0.037 s in batches of
# 16 or 32 (`python -m engine benchmark --train`, cached_by_batch).
CPU_MICRO_BATCH = 8


def make_optimiser(trainee: Trainee, cfg: TrainConfig) -> Optimiser:
    """AdamW over the trainable parameters; a GradScaler for fp16; ReduceLROnPlateau with schedule="plateau"."""
    params = [p for p in trainee.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1) \
        if cfg.schedule == "plateau" else None
    scaler = torch.amp.GradScaler(trainee.device.type, enabled=trainee.amp_dtype == torch.float16)
    return Optimiser(optimizer, scaler, plateau)


def make_batches(trainee: Trainee, sets: list[TrainSet], cfg: TrainConfig, rng: random.Random,
                 on_event: Callable[[Event], None], stop: threading.Event, *, rate: Callable[[], float] | None = None
                 ) -> tuple[Callable[[Sequence[Pair]], object], CachedFeatures | None]:
    """(batches(pairs) -> a batch for trainee.mode, the CachedFeatures trained from or None).

    In "cached" mode this builds (or reuses) the feature cache first; otherwise photos are rendered per step.
    rate() is the share of negatives for the next batch (default: cfg.negative_rate throughout).
    """
    rate = rate or (lambda: cfg.negative_rate)
    if trainee.mode == "cached":
        features = build_feature_cache(
            trainee.model, trainee.tokenizer, trainee.processor, sets, root=in_repo(cfg.cache_dir),
            image_size=cfg.image_size, dtype=cfg.cache_dtype, device=trainee.device, on_event=on_event, stop=stop,
            views=cached_views(cfg.cache_views, cfg.seed) if cfg.augment else [IDENTITY],
            precision=cfg.cache_precision)
        if cfg.hard_negatives:
            on_event(PhaseEvent("preparing", "finding hard negatives"))
            for s, areas in zip(sets, false_alarm_areas(trainee, features, sets)):
                s.negative_weights = hard_negative_weights(areas, cfg.hard_negatives)
        return (lambda pairs: cached_batch(pairs, features, sets, rng, rate(),
                                           grid_augment=cfg.augment and cfg.cache_grid_augment)), features
    images = DecodedImages(sets)
    return (lambda pairs: image_batch(pairs, images, trainee.tokenizer, trainee.processor, image_size=cfg.image_size,
                                      augment=cfg.augment, rng=rng, negative_rate=rate())), None


def false_alarm_areas(trainee: Trainee, features: CachedFeatures, sets: list[TrainSet]) -> list[np.ndarray]:
    """Per set, per train photo: the share of its first cached view that the model (as it starts) marks (p > 0.5)
    for the prompts of the sets that do not share its concept, summed over them; the photos a prompt fires on
    where its concept is absent."""
    out = []
    with torch.no_grad():
        for si, s in enumerate(sets):
            others = [sets[j].prompts[0] for j in range(len(sets))
                      if j != si and not set(sets[j].prompts) & set(s.prompts)]
            areas = np.zeros(len(s.train))
            for i, digest in enumerate(features.digests[si]):
                if not others:
                    break
                acts, _ = features.cache.load(digest, features.views[0])
                acts = [a[None].to(trainee.device) for a in acts]
                for prompt in others:
                    with torch.autocast(trainee.device.type, dtype=trainee.amp_dtype,
                                        enabled=trainee.amp_dtype is not None):
                        logits = trainee.model.decoder(acts, features.cond[prompt][None].to(trainee.device)).logits
                    areas[i] += float((logits.float() > 0).float().mean())
            out.append(areas)
    return out


def batch_loss(trainee: Trainee, batch, cfg: TrainConfig) -> torch.Tensor:
    """The training loss (scalar, fp32) of one batch (CachedBatch or ImageBatch), the way trainee.mode says."""
    logits = batch_logits(trainee, batch)
    target = batch.target.to(trainee.device)
    soft = getattr(batch, "soft", None)
    if trainee.teacher is not None and soft is not None and bool(soft.any()):
        with torch.no_grad():  # the starting model's answer, as the target of the replayed photos' old prompts
            taught = torch.sigmoid(batch_logits(dataclasses.replace(trainee, model=trainee.teacher), batch).float())
        target = torch.where(soft.to(trainee.device)[:, None, None], taught, target)
    return config_loss(logits, target, cfg)


def config_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """segmentation_loss with cfg's weights and options (training steps and validation both use it)."""
    return segmentation_loss(logits, target, bce=cfg.bce_weight, dice=cfg.dice_weight, focal=cfg.focal_weight,
                             presence=cfg.presence_weight, dice_empty=cfg.dice_on_empty,
                             presence_positives=cfg.presence_on_positives, bce_empty=cfg.bce_on_empty)


def train_step(trainee: Trainee, opt: Optimiser, batch, cfg: TrainConfig, *, lr: float | None = None,
               accelerator=None) -> float:
    """One optimiser step on one batch (CachedBatch or ImageBatch); returns the loss.

    lr: set on every parameter group first (the cosine schedule), None to leave it. Under data parallelism
    every process applies the mean gradient, so the replicas stay identical.
    """
    if lr is not None:
        for group in opt.optimizer.param_groups:
            group["lr"] = lr
    opt.optimizer.zero_grad(set_to_none=True)
    if isinstance(batch, CachedBatch) and trainee.device.type == "cpu" and len(batch) > CPU_MICRO_BATCH:
        # The same gradient in pieces (every loss term is a mean over images): the decoder's activations of a
        # piece stay in the CPU's caches. One step of 16 ran 23% faster per image as two of 8 here.
        loss = torch.zeros(())
        for piece in batch.split(CPU_MICRO_BATCH):
            part = batch_loss(trainee, piece, cfg) * (len(piece) / len(batch))
            opt.scaler.scale(part).backward()
            loss += part.detach()
    else:
        loss = batch_loss(trainee, batch, cfg)
        opt.scaler.scale(loss).backward()
    if accelerator is not None and accelerator.num_processes > 1:
        for p in trainee.model.parameters():
            if p.grad is not None:
                p.grad = accelerator.reduce(p.grad, reduction="mean")
    if cfg.grad_clip:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in trainee.model.parameters() if p.requires_grad], cfg.grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    return float(loss.detach())


def make_step(trainee: Trainee, opt: Optimiser, cfg: TrainConfig, state: RunState, batches, *,
              steps_per_epoch: int, accelerator=None) -> Callable[[Sequence[Pair]], float]:
    """step(pairs) -> loss: the run's learning rate for state.global_step, the batch, `train_step`, the count."""
    total_steps, warmup = steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)

    def step(pairs: Sequence[Pair]) -> float:
        lr = None if opt.plateau is not None else cosine_lr(state.global_step, total_steps, warmup, cfg.lr)
        loss = train_step(trainee, opt, batches(pairs), cfg, lr=lr, accelerator=accelerator)
        state.global_step += 1
        return loss

    return step


def step_with_oom_retry(step: Callable[[Sequence[Pair]], float], pairs: Sequence[Pair], state: RunState,
                        on_event: Callable[[Event], None]) -> float:
    """step(pairs); on CUDA out-of-memory, halve state.batch_size (logged) and run the pairs as two halves."""
    try:
        return step(pairs)
    except torch.cuda.OutOfMemoryError:
        if len(pairs) <= 1:
            raise RuntimeError("CUDA out of memory even at batch size 1; lower image_size or train fewer layers.")
        torch.cuda.empty_cache()
        state.batch_size = max(1, len(pairs) // 2)
        note(state, on_event, f"CUDA out of memory: batch size halved to {state.batch_size}")
        half = len(pairs) // 2
        return (step_with_oom_retry(step, pairs[:half], state, on_event)
                + step_with_oom_retry(step, pairs[half:], state, on_event)) / 2


def train_one_epoch(epoch: int, order: list[Pair], step: Callable[[Sequence[Pair]], float], state: RunState,
                    steps_per_epoch: int, on_event: Callable[[Event], None], stop: threading.Event) -> list[float]:
    """Step through `order` in batches of the live state.batch_size; returns the step losses.

    Raises TrainingStopped before a step once `stop` is set.
    """
    losses = []
    for i in range(steps_per_epoch):
        check_stop(stop, f"training epoch {epoch}")
        pairs = order[i * state.batch_size:(i + 1) * state.batch_size]
        if not pairs:
            break
        losses.append(step_with_oom_retry(step, pairs, state, on_event))
        on_event(StepEvent(epoch, i + 1, steps_per_epoch, loss=losses[-1]))
    return losses


# ---------------------------------------------------------------------------------------------------------
# Validation


@dataclass
class Validation:
    """One epoch's validation. val: prompt -> miou, dice, best_threshold, best_miou, precision, recall, n (photos);
    threshold: the model's default threshold; score: the mean per-image mIoU at it (what selects the epoch);
    thresholds / presence_thresholds: prompt -> its own calibrated pixel / presence threshold (see
    engine.calibrate: absent photos of the other sets count as empty ground truth); val_loss: None without
    validation images."""

    val: dict
    val_loss: float | None
    threshold: float
    score: float
    thresholds: dict
    presence_thresholds: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)  # prompt -> PromptCalibration, as calibrated


def mean_sweep(sweeps: list[dict]) -> dict:
    """Threshold -> mean over sets of per-image mIoU (sweeps: one {threshold: mIoU} per set)."""
    return {t: float(np.mean([sw[t] for sw in sweeps])) for t in sweeps[0]} if sweeps else {0.5: 0.0}


def validate(trainee: Trainee, sets: list[TrainSet], cfg: TrainConfig, memo: ActivationMemo | None = None, *,
             stop: threading.Event | None = None, previous: dict | None = None,
             kept: dict | None = None) -> Validation:
    """Per-set evaluation with engine.evaluate (the same code as `engine evaluate`) plus the val loss.

    One default threshold for the model: the best mean (over sets) of the first prompt's per-image mIoU,
    swept on the valid split, or on the first train (or held-out) photos with calibrate_on="train" ("holdout").
    Per prompt, `calibrate` picks the pixel and presence thresholds on the same split, absent concepts counted.
    All at cfg.model_size, the size the saved model runs at.
    memo: with a frozen vision tower, the run's ActivationMemo (photos' activations kept between epochs).
    stop: raises TrainingStopped once set, checked after every validation photo and before the calibration.
    previous: an earlier epoch's calibration, used again instead of calibrating (cfg.calibrate_every).
    kept: prompt -> (pixel, presence) thresholds kept as they are (`kept_thresholds`), not calibrated.
    """
    model = trainee.model
    model.eval()
    # at the size the saved model runs at (cfg.inference_size), so that its scores and thresholds are its own
    processor = trainee.processor if cfg.model_size == cfg.image_size else image_processor(cfg.model_size)
    if memo is not None:  # the tower is frozen: its activations are computed at the first validation only
        seg = FrozenTowerSegmenter(model, trainee.tokenizer, processor, threads=cfg.threads,
                                   device=str(trainee.device), memo=memo)
    else:
        seg = Segmenter(model, trainee.tokenizer, processor, threads=cfg.threads, device=str(trainee.device))
    results, losses, sweeps = {}, [], []
    try:
        with torch.inference_mode():
            for group in concept_groups(sets):  # sets that share a prompt are scored as one
                val = joined_split([sets[k].val for k in group])
                if val is None:
                    continue
                prompts = group_prompts(sets, group)
                report = evaluate(seg, val, prompts, threshold=0.5, progress=False,
                                  on_image=lambda done, n: check_stop(stop, "validating"))
                for p, r in report.prompts.items():
                    results[p] = {"miou": r.miou, "dice": r.dice, "best_threshold": r.best_threshold,
                                  "best_miou": r.best_miou, "precision": r.precision, "recall": r.recall,
                                  "n": r.n_images}
                sweeps.append(report.prompts[prompts[0]].sweep)
                for i in range(len(val)):
                    check_stop(stop, "validating")
                    image, mask = val[i]
                    losses.append(_val_loss(seg, trainee.processor, image, mask, prompts[0], cfg))
            check_stop(stop, "calibrating the thresholds")
            calibration = previous if previous is not None else calibrate(seg, sets, cfg.calibration_images,
                                                                          cfg.calibrate_on, cfg.holdout_min_photos)
    finally:
        model.train()
    swept = mean_sweep(sweeps)
    threshold, score = best_threshold(swept)
    if cfg.calibrate_on != "valid":  # scored on the valid split at the threshold the train / held-out photos chose
        firsts = [calibration[s.prompts[0]].sweep for s in sets if s.prompts[0] in calibration]
        threshold = best_threshold(mean_sweep(firsts))[0]
        score = swept.get(threshold, 0.0)
    thresholds = {p: c.threshold for p, c in calibration.items()}
    presence = {p: c.presence_threshold for p, c in calibration.items()}
    for p, (t, tau) in (kept or {}).items():
        thresholds[p], presence[p] = t, tau
    return Validation(results, float(np.mean(losses)) if losses else None, threshold, score, thresholds, presence,
                      calibration)


def kept_thresholds(cfg: TrainConfig, sets: list[TrainSet]) -> dict[str, tuple[float, float]]:
    """With cfg.replay_thresholds="keep": prompt -> the starting model's (pixel, presence) thresholds, for the
    prompts whose sets are all replayed (val_split "none"), and for the prompts it knew that no set of this run
    holds (so the saved model answers them as before, not at a default threshold). Replayed photos are trained
    on again and again in a short run, so thresholds set on them would run high; the model's maps for those
    prompts barely move."""
    if cfg.replay_thresholds != "keep" or cfg.model == "scratch":
        return {}
    from engine.models.io import read_meta
    from engine.models.sources import resolve_source

    meta = read_meta(resolve_source(cfg.model).path)
    pixel, presence = meta.get("thresholds") or {}, meta.get("presence_thresholds") or {}
    trained = {p for s in sets for p in s.prompts}
    kept = {p: (float(pixel[p]), float(presence[p])) for p in pixel if p in presence and p not in trained}
    for group in concept_groups(sets):
        if all(sets[k].spec.val_split == "none" for k in group):
            for p in group_prompts(sets, group):
                if p in pixel and p in presence:
                    kept[p] = (float(pixel[p]), float(presence[p]))
    return kept


def _val_loss(seg: Segmenter, processor, image, mask, prompt: str, cfg: TrainConfig) -> float:
    """The training loss of one un-augmented validation photo (image: RGB PIL, mask: bool (H, W))."""
    img, msk = render_view(image, mask, IDENTITY, cfg.image_size)
    pv = torch.from_numpy(normalise(img[None], processor.image_mean, processor.image_std))
    logits = seg.logits(pv, [prompt])[:, 0]
    return float(config_loss(logits, torch.from_numpy(msk)[None].to(logits.device), cfg))


def calibrate(seg: Segmenter, sets: list[TrainSet], n_images: int, split: str = "train",
              min_holdout: int = 0) -> dict[str, PromptCalibration]:
    """{prompt: PromptCalibration} from each set's first n_images photos of `split` ("train", "valid" or
    "holdout"), the other sets' photos counted as absent (engine.calibrate.calibrate_model). One prompt per set
    keeps it cheap; its synonyms share its thresholds. Sets without photos in `split` are left out.
    min_holdout: with split="holdout", a concept with fewer held-out photos than this is calibrated on its train
    photos instead (`held_out_or_train`), and its presence threshold still keeps MIN_FOUND of its held-out photos
    with the concept found (engine.calibrate: presence runs high on the photos a model has fitted)."""
    pairs, unseen = [], {}
    for group in concept_groups(sets):  # sets that share a prompt hold one concept: calibrated together
        splits = {name: joined_split([getattr(sets[k], field) for k in group])
                  for name, field in (("train", "train"), ("valid", "val"), ("holdout", "holdout"))}
        ds = held_out_or_train(splits, min_holdout) if split == "holdout" else splits[split]
        if ds is not None:
            prompts = group_prompts(sets, group)
            pairs.append((ds, prompts))
            if split == "holdout" and ds is not splits["holdout"] and splits["holdout"] is not None:
                unseen[prompts[0]] = splits["holdout"]
    if not pairs:
        return {}
    picked = calibrate_model(seg, [(ds, prompts[:1]) for ds, prompts in pairs], n_images, unseen=unseen)
    return {p: picked[prompts[0]] for _, prompts in pairs for p in prompts}


def held_out_or_train(splits: dict, min_holdout: int):
    """The held-out photos of a concept, or its train photos where it has fewer than `min_holdout` held out:
    thresholds set on a handful of photos swing more than the bias of photos the model has fitted (the joints
    set's 11 held-out photos, split in two, set the bundled model's taping threshold at 0.85 on one half and 0.05
    on the other: tools/replica_scores.py)."""
    held = splits["holdout"]
    return held if held is not None and len(held) >= min_holdout else splits["train"]
