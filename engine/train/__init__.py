"""Training: one `train(cfg)` function, a background job for the app, and the `train` / `benchmark --train` CLI.

Three ways a batch reaches the decoder, chosen from the config:
- cached:  backbone frozen + feature_cache: vision activations of K augmented views per image are computed
           once (engine/features.py) and the decoder trains from them;
- plain:   HF's `CLIPSegForImageSegmentation.forward` every step (encoders under no_grad) — the baseline;
- full:    our own forward (vision tower -> text features -> decoder) with gradients in whatever layers are
           trainable (last N layers, everything, or a model trained from scratch).

A run folder holds config.json, metrics.jsonl, best/ and last/ (Hugging Face folders; last/ also holds the
optimizer, scheduler, scaler and RNG state for --resume) and summary.json. Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.models import REPO_ROOT
from engine.segmenter import normalise, vision_activations
from engine.errors import JobRunning, TrainingStopped

SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "drywall-qa"
STATE_FILE = "training_state.pt"


@dataclass
class DataSpec:
    """A labelled set and its prompts (synonyms). `path`: a YOLOv8 root, a split folder, a COCO json, ..."""

    path: str
    prompts: tuple[str, ...]
    train_split: str | None = "train"  # used when `path` is a root with several splits
    val_split: str | None = "valid"


@dataclass
class TrainConfig:
    data: list[DataSpec] = field(default_factory=list)
    model: str = "auto"  # any model source, or "scratch" (a new model of `scratch_arch`, random init)
    out: str = "checkpoints/run"
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    image_size: int = 352
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 0.0
    schedule: str = "cosine"  # "cosine" (linear warm-up, cosine decay) or "plateau" (halve on a val plateau)
    warmup_epochs: float = 0.5
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better val mIoU before stopping early; 0 = never
    seed: int = 0
    train: str = "decoder"  # "decoder" (CLIPSeg paper recipe), "last_n", or "all"
    unfreeze_vision_layers: int = 0  # with train="last_n": the last N layers the decoder reads up to
    unfreeze_text_layers: int = 0
    amp: bool = True  # CUDA: fp16 autocast + GradScaler. CPU: only with amp_dtype="bf16" and CPU support
    amp_dtype: str = "auto"  # "auto" (fp16 on CUDA), "fp16", "bf16"
    device: str = "auto"
    threads: int | None = None
    feature_cache: bool = True
    cache_dir: str = ".cache/features"
    cache_dtype: str = "float16"
    cache_views: int = 4  # K augmented views cached per image (with augment on)
    augment: bool = True
    set_balance: float = 0.5  # sampling weight ∝ len(set) ** set_balance (0: sets equal, 1: by size)
    max_train_images: int | None = None  # per set, for quick runs
    max_val_images: int | None = None
    scratch_arch: dict = field(default_factory=dict)  # CLIPSegConfig overrides for model="scratch"
    foreground_prior: float = 0.05
    film_init_std: float = 1e-3  # model="scratch": noise on the FiLM layers' identity init
    select: str = "best"  # "best": keep the epoch with the best val score; "last": the final epoch
    calibrate_on: str = "valid"  # split whose threshold sweep sets the model's threshold: "valid" or "train"
    calibration_images: int = 100  # per set, with calibrate_on="train" (the first N, un-augmented)


# Presets hold only what differs from the defaults.
PRESETS: dict[str, dict] = {
    "default": {},
    "quick": {"epochs": 2, "max_train_images": 32, "max_val_images": 16},
    "tiny": {"epochs": 2, "batch_size": 2, "image_size": 64, "max_train_images": 6, "max_val_images": 4,
             "feature_cache": False, "warmup_epochs": 0},
    "full": {"train": "last_n", "unfreeze_vision_layers": 2, "lr": 2e-4, "epochs": 20, "feature_cache": False},
    "starter": {
        "model": "scratch", "out": "checkpoints/drywall-starter", "train": "all", "feature_cache": False,
        "epochs": 80, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 16, "image_size": 224, "amp_dtype": "bf16",
        "patience": 0, "warmup_epochs": 2, "set_balance": 0.5, "film_init_std": 0.05,
        # The valid splits stay unseen: no epoch is picked on them and the threshold is set on train photos.
        "select": "last", "calibrate_on": "train",
        "scratch_arch": {
            "vision_config": {"image_size": 224, "patch_size": 16, "hidden_size": 192, "intermediate_size": 768,
                              "num_hidden_layers": 6, "num_attention_heads": 3},
            "text_config": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
                            "num_attention_heads": 2, "max_position_embeddings": 32},
            "projection_dim": 128, "reduce_dim": 64, "extract_layers": [1, 3, 5],
            "decoder_num_attention_heads": 4, "decoder_intermediate_size": 256,
            "use_complex_transposed_convolution": True,
        },
    },
}


def default_data() -> list[DataSpec]:
    """The two sets in ../shared with the prompts inspectors type."""
    return [
        DataSpec(str(SHARED_DATA / "cracks"), ("segment crack", "segment wall crack")),
        DataSpec(str(SHARED_DATA / "joints"), ("segment taping area", "segment joint/tape", "segment drywall seam")),
    ]


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from the defaults, a preset's overrides, then explicit overrides (None values ignored)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    values = {**PRESETS.get(preset or "default", {}), **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown training setting(s) {unknown}; valid ones: {', '.join(sorted(names))}.")
    data = values.pop("data", None) or default_data()
    values["data"] = [d if isinstance(d, DataSpec) else DataSpec(**d) for d in data]
    cfg = TrainConfig(**values)
    if cfg.train not in ("decoder", "last_n", "all"):
        raise ValueError(f"train must be 'decoder', 'last_n' or 'all', not {cfg.train!r}.")
    if cfg.select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', not {cfg.select!r}.")
    if cfg.calibrate_on not in ("valid", "train"):
        raise ValueError(f"calibrate_on must be 'valid' or 'train', not {cfg.calibrate_on!r}.")
    if cfg.schedule not in ("cosine", "plateau"):
        raise ValueError(f"schedule must be 'cosine' or 'plateau', not {cfg.schedule!r}.")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0.")
    return cfg


def config_from_json(path) -> TrainConfig:
    values = json.loads(Path(path).read_text())
    values["data"] = [DataSpec(d["path"], tuple(d["prompts"]), d.get("train_split", "train"), d.get("val_split", "valid"))
                      for d in values["data"]]
    return make_config(None, **values)


# ---------------------------------------------------------------------------------------------------------
# Events


@dataclass
class Event:
    """What `train` reports: kind is step, epoch, checkpoint, phase, finished, stopped or failed."""

    kind: str
    epoch: int = 0
    step: int = 0
    steps: int = 0
    data: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Data


@dataclass
class _Set:
    spec: DataSpec
    train: object  # LabelledSet
    val: object | None
    prompts: tuple[str, ...]


def _open_sets(cfg: TrainConfig) -> list[_Set]:
    from engine.data import open_dataset

    sets = []
    for spec in cfg.data:
        if not spec.prompts:
            raise ValueError(f"Data set {spec.path} has no prompts: write it as PATH=\"prompt one,prompt two\".")
        root = Path(spec.path)
        has_splits = (root / (spec.train_split or "train")).is_dir()
        if has_splits:
            train = open_dataset(root, split=spec.train_split, prompts=spec.prompts, skip_bad=True)
            val = open_dataset(root, split=spec.val_split, prompts=spec.prompts, skip_bad=True) \
                if spec.val_split and (root / spec.val_split).is_dir() else None
        else:
            train, val = open_dataset(root, prompts=spec.prompts, skip_bad=True), None
        if val is None:  # no validation split given: hold out 15%, keeping Roboflow copies of a photo together
            train, val = train.split((0.85, 0.15), seed=cfg.seed)
        if cfg.max_train_images:
            train = train.subset(range(min(len(train), cfg.max_train_images)))
        if cfg.max_val_images:
            val = val.subset(range(min(len(val), cfg.max_val_images)))
        if len(train) == 0:
            raise ValueError(f"Data set {spec.path} has no training images.")
        sets.append(_Set(spec, train, val, tuple(spec.prompts)))
    if not sets:
        raise ValueError("No training data: give at least one --data PATH=prompts.")
    return sets


def _mean_sweep(sweeps: list[dict]) -> dict:
    """Threshold -> mean over sets of per-image mIoU (sweeps: one {threshold: mIoU} per set)."""
    return {t: float(np.mean([sw[t] for sw in sweeps])) for t in sweeps[0]} if sweeps else {0.5: 0.0}


def _epoch_order(sets: list[_Set], balance: float, rng: random.Random) -> list[tuple[int, int]]:
    """(set index, item index) pairs for one epoch: each set drawn ∝ len ** balance, total = sum of lens."""
    sizes = [len(s.train) for s in sets]
    total = sum(sizes)
    weights = np.array([n ** balance for n in sizes], dtype=float)
    counts = np.floor(weights / weights.sum() * total).astype(int)
    counts[np.argmax(weights)] += total - counts.sum()
    order = []
    for si, (n, count) in enumerate(zip(sizes, counts)):
        idx = []
        while len(idx) < count:
            chunk = list(range(n))
            rng.shuffle(chunk)
            idx.extend(chunk)
        order.extend((si, i) for i in idx[:count])
    rng.shuffle(order)
    return order


# ---------------------------------------------------------------------------------------------------------
# Model set-up


def _device(cfg: TrainConfig):
    import torch

    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _amp_dtype(cfg: TrainConfig, device) -> "torch.dtype | None":
    """The autocast dtype, or None for plain fp32: fp16 on CUDA; bf16 on CPU only if asked and supported."""
    import torch

    from engine.segmenter import cpu_supports_bf16

    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    if cfg.amp_dtype == "bf16" and cpu_supports_bf16():
        return torch.bfloat16
    if cfg.amp_dtype == "fp16":  # slow on CPU, but runs the CUDA AMP path (autocast + GradScaler) anywhere
        return torch.float16
    return None


def _build_model(cfg: TrainConfig):
    """(model, tokenizer, processor, source label) for the start of a run."""
    from engine.models import (fit_config_to_tokenizer, image_processor, load_clipseg, new_model,
                               resolve_source, tiny_config)
    from engine.models.tokenizer import build_tokenizer

    if cfg.model == "scratch":
        tokenizer = build_tokenizer()
        config = tiny_config(**cfg.scratch_arch) if cfg.scratch_arch else tiny_config(image_size=cfg.image_size)
        config.text_config.vocab_size = len(tokenizer)  # the embedding table holds the local vocabulary only
        config = fit_config_to_tokenizer(config, tokenizer)
        model = new_model(config, seed=cfg.seed)
        from engine.models import reinit_decoder

        reinit_decoder(model, cfg.foreground_prior, cfg.film_init_std)
        return model, tokenizer, image_processor(cfg.image_size), "scratch"
    source = resolve_source(cfg.model)
    if source.kind == "onnx":
        raise ValueError(f"{cfg.model} is an ONNX export; training needs a PyTorch model (a folder, run or Hub id).")
    model, tokenizer, processor = load_clipseg(source.path)
    return model, tokenizer, image_processor(cfg.image_size), source.label


def _set_trainable(model, cfg: TrainConfig) -> int:
    """Freeze all but what cfg.train names; returns the number of trainable parameters."""
    for p in model.parameters():
        p.requires_grad = cfg.train == "all"
    for p in model.decoder.parameters():
        p.requires_grad = True
    if cfg.train == "last_n":
        deepest = max(model.config.extract_layers)
        vision_layers = model.clip.vision_model.encoder.layers[: deepest + 1]
        for layer in list(vision_layers)[len(vision_layers) - cfg.unfreeze_vision_layers:] if cfg.unfreeze_vision_layers else []:
            for p in layer.parameters():
                p.requires_grad = True
        text_layers = model.clip.text_model.encoder.layers
        for layer in list(text_layers)[len(text_layers) - cfg.unfreeze_text_layers:] if cfg.unfreeze_text_layers else []:
            for p in layer.parameters():
                p.requires_grad = True
        if cfg.unfreeze_text_layers:
            for p in [*model.clip.text_model.final_layer_norm.parameters(), *model.clip.text_projection.parameters()]:
                p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _backbone_frozen(model) -> bool:
    return not any(p.requires_grad for p in model.clip.parameters())


def forward_logits(model, pixel_values, input_ids, attention_mask, extract_layers):
    """Our own differentiable forward: truncated vision tower -> text features -> decoder.

    pixel_values (B, 3, S, S); input_ids/attention_mask (B, L), one prompt per image. Returns logits (B, S, S).
    Unlike HF's forward (encoders under no_grad), gradients reach any trainable encoder layer.
    """
    acts = vision_activations(model, pixel_values, extract_layers)
    cond = model.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.decoder(acts, cond).logits


def plain_logits(model, pixel_values, input_ids, attention_mask):
    """HF's own forward (encoders under no_grad): the 'plain way' of decoder-only fine-tuning."""
    return model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits


# ---------------------------------------------------------------------------------------------------------
# The training function


class _Trainer:
    """State of one run; `train()` below is the public entry point."""

    def __init__(self, cfg: TrainConfig, on_event: Callable[[Event], None], stop: threading.Event, resume: bool):
        import torch

        self.cfg, self.on_event, self.stop, self.resume = cfg, on_event, stop, resume
        self.device = _device(cfg)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads or max(1, os.cpu_count() or 1))
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.accelerator = _accelerator()
        self.is_main = self.accelerator is None or self.accelerator.is_main_process
        self.run_dir = Path(cfg.out)
        if not self.run_dir.is_absolute():
            self.run_dir = REPO_ROOT / self.run_dir
        self.history: list[dict] = []
        self.log: list[str] = []
        self._samples: dict = {}

    def emit(self, kind: str, **kw) -> None:
        self.on_event(Event(kind, **kw))

    def note(self, message: str) -> None:
        self.log.append(message)
        self.emit("phase", data={"phase": "log", "message": message})

    # -- setup --

    def setup(self) -> None:
        import torch

        cfg = self.cfg
        self.emit("phase", data={"phase": "preparing", "message": "reading data sets"})
        self.sets = _open_sets(cfg)
        if self.resume:
            last = self.run_dir / "last"
            if not (last / STATE_FILE).is_file():
                raise ValueError(f"Cannot resume: {last} has no {STATE_FILE}. Start a new run instead (drop --resume).")
            saved = config_from_json(self.run_dir / "config.json")
            saved.epochs = cfg.epochs  # allow extending a run
            self.cfg = cfg = saved
            from engine.models import load_clipseg

            self.model, self.tokenizer, _ = load_clipseg(last)
            self.processor = _processor_from(cfg)
            self.source_label = f"resume:{self.run_dir.name}"
        else:
            torch.manual_seed(cfg.seed)
            self.model, self.tokenizer, self.processor, self.source_label = _build_model(cfg)
        self.model.to(self.device)
        self.n_trainable = _set_trainable(self.model, cfg)
        self.extract_layers = list(self.model.config.extract_layers)
        self.mode = "cached" if (_backbone_frozen(self.model) and cfg.feature_cache) else (
            "plain" if _backbone_frozen(self.model) else "full")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=0.5, patience=1) \
            if cfg.schedule == "plateau" else None
        self.batch_size = cfg.batch_size
        self.start_epoch, self.best_miou, self.best_epoch, self.bad_epochs, self.global_step = 1, -1.0, 0, 0, 0
        self.rng = random.Random(cfg.seed)
        if self.resume:
            self._load_state()
        elif self.is_main:
            from engine.fileio import atomic_write_json

            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            atomic_write_json(self.run_dir / "config.json", dataclasses.asdict(cfg))
        self.steps_per_epoch = math.ceil(sum(len(s.train) for s in self.sets) / self.batch_size / self._world())
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.text_tokens = {p: self.tokenizer([p], return_tensors="pt") for s in self.sets for p in s.prompts}
        if self.mode == "cached":
            self._build_cache()

    def _world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def core(self):
        return self.model

    # -- the feature cache --

    def _build_cache(self) -> None:
        import torch

        from engine.train.features import FeatureCache, IDENTITY, cached_views, file_digest, model_fingerprint, render_view

        cfg = self.cfg
        self.cache = FeatureCache(REPO_ROOT / cfg.cache_dir if not Path(cfg.cache_dir).is_absolute() else cfg.cache_dir,
                                  model_fingerprint(self.core, cfg.image_size), cfg.cache_dtype)
        self.views = cached_views(cfg.cache_views, cfg.seed) if cfg.augment else [IDENTITY]
        self.digests = [[file_digest(item.image_path) for item in s.train.items] for s in self.sets]
        todo = [(si, i, v) for si, s in enumerate(self.sets) for i in range(len(s.train)) for v in self.views
                if not self.cache.has(self.digests[si][i], v)]
        start = time.perf_counter()
        self.emit("phase", data={"phase": "caching", "message": f"caching features of {len(todo)} views"})
        with torch.inference_mode():
            for n, (si, i, view) in enumerate(todo):
                self._check_stop()
                image, mask = self.sets[si].train[i]
                img, msk = render_view(image, mask, view, cfg.image_size)
                pv = torch.from_numpy(normalise(img[None], self.processor.image_mean, self.processor.image_std))
                acts = vision_activations(self.core, pv.to(self.device), self.extract_layers)
                self.cache.save(self.digests[si][i], view, [a[0] for a in acts], msk)
                self.emit("step", epoch=0, step=n + 1, steps=len(todo), data={"phase": "caching"})
            cond = {}
            for p, tok in self.text_tokens.items():
                cond[p] = self.core.clip.get_text_features(**{k: v.to(self.device) for k, v in tok.items()}).pooler_output[0]
        self.cond = cond
        self.cache_build_s = time.perf_counter() - start
        self.cache_built_views = len(todo)

    # -- batches --

    def _batch_full(self, pairs):
        """(pixel_values, input_ids, attention_mask, targets) rendered on the fly (random views if augment)."""
        import torch

        from engine.train.features import IDENTITY, random_view, render_view

        cfg = self.cfg
        imgs, masks, prompts = [], [], []
        for si, i in pairs:
            image, mask = self._sample(si, i)
            view = random_view(np.random.default_rng(self.rng.getrandbits(32))) if cfg.augment else IDENTITY
            img, msk = render_view(image, mask, view, cfg.image_size)
            if cfg.augment:
                img = _jitter(img, np.random.default_rng(self.rng.getrandbits(32)))
            imgs.append(img)
            masks.append(msk)
            prompts.append(self.rng.choice(self.sets[si].prompts))
        pv = torch.from_numpy(normalise(np.stack(imgs), self.processor.image_mean, self.processor.image_std))
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt")
        return pv, tokens["input_ids"], tokens["attention_mask"], torch.from_numpy(np.stack(masks))

    def _sample(self, si: int, i: int):
        """(RGB image, bool mask) of a training item, decoded once per run and then kept in memory."""
        key = (si, i)
        if key not in self._samples:
            self._samples[key] = self.sets[si].train[i]
        return self._samples[key]

    def _batch_cached(self, pairs):
        """(activations list of (B, T, C), cond (B, D), targets (B, S, S)) from the feature cache."""
        import torch

        acts, masks, conds = None, [], []
        for si, i in pairs:
            view = self.views[self.rng.randrange(len(self.views))]
            a, m = self.cache.load(self.digests[si][i], view)
            acts = [[x] for x in a] if acts is None else [lst + [x] for lst, x in zip(acts, a)]
            masks.append(m)
            conds.append(self.cond[self.rng.choice(self.sets[si].prompts)])
        return [torch.stack(a) for a in acts], torch.stack(conds), torch.stack(masks)

    # -- one step --

    def _loss(self, pairs):
        import torch

        from engine.train.losses import segmentation_loss

        cfg, dev = self.cfg, self.device
        autocast = torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)
        if self.mode == "cached":
            acts, cond, target = self._batch_cached(pairs)
            with autocast:
                logits = self.model.decoder([a.to(dev) for a in acts], cond.to(dev)).logits
        else:
            pv, ids, am, target = self._batch_full(pairs)
            with autocast:
                if self.mode == "plain":
                    logits = plain_logits(self.model, pv.to(dev), ids.to(dev), am.to(dev))
                else:
                    logits = forward_logits(self.model, pv.to(dev), ids.to(dev), am.to(dev), self.extract_layers)
        if logits.dim() == 2:
            logits = logits[None]
        return segmentation_loss(logits, target.to(dev), bce=cfg.bce_weight, dice=cfg.dice_weight, focal=cfg.focal_weight)

    def _step(self, pairs) -> float:
        import torch

        from engine.train.losses import cosine_lr

        if self.plateau is None:
            lr = cosine_lr(self.global_step, self.total_steps, int(self.cfg.warmup_epochs * self.steps_per_epoch), self.cfg.lr)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(pairs)
        self.scaler.scale(loss).backward()
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            # Data parallel: every process applies the mean gradient, so the replicas stay identical.
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad = self.accelerator.reduce(p.grad, reduction="mean")
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        return float(loss.detach())

    def _step_with_oom_retry(self, pairs) -> float:
        """On CUDA out-of-memory: halve the batch size (logged) and run this step as two halves."""
        import torch

        try:
            return self._step(pairs)
        except torch.cuda.OutOfMemoryError:
            if len(pairs) <= 1:
                raise RuntimeError("CUDA out of memory even at batch size 1; lower image_size or train fewer layers.")
            torch.cuda.empty_cache()
            self.batch_size = max(1, len(pairs) // 2)
            self.note(f"CUDA out of memory: batch size halved to {self.batch_size}")
            half = len(pairs) // 2
            return (self._step_with_oom_retry(pairs[:half]) + self._step_with_oom_retry(pairs[half:])) / 2

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise TrainingStopped()

    # -- validation --

    def validate(self) -> dict:
        """Per-set evaluation with engine.evaluate (the same code as `engine evaluate`) plus the val loss."""
        import torch

        from engine.evaluate import best_threshold, evaluate
        from engine.train.losses import segmentation_loss
        from engine.train.features import IDENTITY, render_view
        from engine.segmenter import Segmenter

        self.core.eval()
        seg = Segmenter(self.core, self.tokenizer, self.processor, threads=self.cfg.threads, device=str(self.device))
        results, losses, sweeps = {}, [], []
        with torch.inference_mode():
            for s in self.sets:
                if s.val is None or len(s.val) == 0:
                    continue
                report = evaluate(seg, s.val, list(s.prompts), threshold=0.5, progress=False)
                for p, r in report.prompts.items():
                    results[p] = {"miou": r.miou, "dice": r.dice, "best_threshold": r.best_threshold,
                                  "best_miou": r.best_miou, "precision": r.precision, "recall": r.recall, "sweep": r.sweep}
                sweeps.append(report.prompts[s.prompts[0]].sweep)
                for i in range(len(s.val)):
                    image, mask = s.val[i]
                    img, msk = render_view(image, mask, IDENTITY, self.cfg.image_size)
                    pv = torch.from_numpy(normalise(img[None], self.processor.image_mean, self.processor.image_std))
                    logits = seg.logits(pv, [s.prompts[0]])[:, 0]
                    losses.append(float(segmentation_loss(logits, torch.from_numpy(msk)[None].to(logits.device),
                                                          bce=self.cfg.bce_weight, dice=self.cfg.dice_weight,
                                                          focal=self.cfg.focal_weight)))
            calibration = self._calibration_sweeps(seg) if self.cfg.calibrate_on == "train" else None
        self.core.train()
        # One default threshold for the model: best mean (over sets) of the first prompt's per-image mIoU.
        # Scored on the valid split; the threshold comes from the calibration split when that is not valid.
        mean_sweep = _mean_sweep(sweeps)
        threshold, score = best_threshold(mean_sweep)
        thresholds = {p: r["best_threshold"] for p, r in results.items()}
        if calibration is not None:
            threshold = best_threshold(_mean_sweep([sw for sw, _ in calibration.values()]))[0]
            score = mean_sweep.get(threshold, 0.0)
            thresholds = {p: t for _, prompt_thresholds in calibration.values() for p, t in prompt_thresholds.items()}
        for r in results.values():
            r.pop("sweep")
        return {"val": results, "val_loss": float(np.mean(losses)) if losses else None,
                "threshold": threshold, "score": score, "thresholds": thresholds}

    def _calibration_sweeps(self, seg) -> dict:
        """Per set: (first prompt's threshold sweep, its best threshold for every prompt of the set), on the
        first N train images. One prompt per set keeps it cheap; its synonyms share the threshold."""
        from engine.evaluate import evaluate

        out = {}
        for s in self.sets:
            subset = s.train.subset(range(min(len(s.train), self.cfg.calibration_images)))
            result = evaluate(seg, subset, [s.prompts[0]], threshold=0.5, progress=False).prompts[s.prompts[0]]
            out[s.spec.path] = (result.sweep, {p: result.best_threshold for p in s.prompts})
        return out

    # -- saving --

    def _meta(self, val: dict, epoch: int) -> dict:
        return {"threshold": val["threshold"], "prompts": [p for s in self.sets for p in s.prompts],
                "thresholds": val["thresholds"],
                "val": {p: {k: r[k] for k in ("miou", "dice", "best_miou")} for p, r in val["val"].items()},
                "epoch": epoch, "run": self.run_dir.name, "image_size": self.cfg.image_size}

    def save(self, folder: str, val: dict, epoch: int, with_state: bool) -> None:
        import torch

        from engine.fileio import replace_dir
        from engine.models import META_FILE, image_processor

        dst = self.run_dir / folder
        with replace_dir(dst) as tmp:
            self.core.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            image_processor(self.cfg.image_size).save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(self._meta(val, epoch), indent=2))
            if with_state:
                torch.save({
                    "epoch": epoch, "global_step": self.global_step, "optimizer": self.optimizer.state_dict(),
                    "plateau": self.plateau.state_dict() if self.plateau else None, "scaler": self.scaler.state_dict(),
                    "best_miou": self.best_miou, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                    "batch_size": self.batch_size, "rng_python": self.rng.getstate(),
                    "rng_torch": torch.get_rng_state(), "rng_numpy": np.random.get_state(),
                }, tmp / STATE_FILE)
        self.emit("checkpoint", epoch=epoch, data={"folder": str(dst)})

    def _load_state(self) -> None:
        import torch

        state = torch.load(self.run_dir / "last" / STATE_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.global_step, self.best_miou = state["global_step"], state["best_miou"]
        self.best_epoch, self.bad_epochs, self.batch_size = state["best_epoch"], state["bad_epochs"], state["batch_size"]
        self.rng.setstate(state["rng_python"])
        torch.set_rng_state(state["rng_torch"])
        np.random.set_state(state["rng_numpy"])
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.is_file():
            self.history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            self.history = [row for row in self.history if row["epoch"] < self.start_epoch]

    # -- the loop --

    def run(self) -> dict:
        from engine.fileio import append_line, atomic_write_json

        start = time.perf_counter()
        self.setup()
        cfg = self.cfg
        self.model.train()
        stopped = False
        epoch = self.start_epoch - 1
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                t0 = time.perf_counter()
                self.emit("phase", epoch=epoch, data={"phase": "training", "message": f"epoch {epoch}/{cfg.epochs}"})
                order = _epoch_order(self.sets, cfg.set_balance, self.rng)
                if self.accelerator is not None:  # each process takes an equal share of the epoch
                    world = self.accelerator.num_processes
                    order = (order + order[: -len(order) % world])[self.accelerator.process_index::world]
                losses = []
                for step in range(self.steps_per_epoch):
                    self._check_stop()
                    pairs = order[step * self.batch_size:(step + 1) * self.batch_size]
                    if not pairs:
                        break
                    losses.append(self._step_with_oom_retry(pairs))
                    self.emit("step", epoch=epoch, step=step + 1, steps=self.steps_per_epoch,
                              data={"loss": losses[-1], "phase": "training"})
                self.emit("phase", epoch=epoch, data={"phase": "validating", "message": f"validating epoch {epoch}"})
                val = self.validate()
                lr = self.optimizer.param_groups[0]["lr"]
                if self.plateau is not None:
                    self.plateau.step(val["score"])
                row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                       "val_loss": val["val_loss"], "lr": lr, "val": val["val"], "threshold": val["threshold"],
                       "score": val["score"], "seconds": round(time.perf_counter() - t0, 2)}
                self.history.append(row)
                improved = val["score"] > self.best_miou or cfg.select == "last"
                if improved:
                    self.best_miou, self.best_epoch, self.bad_epochs = val["score"], epoch, 0
                else:
                    self.bad_epochs += 1
                if self.is_main:
                    append_line(self.run_dir / "metrics.jsonl", json.dumps(row))
                    if improved:
                        self.save("best", val, epoch, with_state=False)
                    self.save("last", val, epoch, with_state=True)
                    self._write_summary(start, finished=False)
                if self.accelerator is not None:
                    self.accelerator.wait_for_everyone()
                self.emit("epoch", epoch=epoch, data=row)
                if cfg.patience and self.bad_epochs >= cfg.patience:
                    self.note(f"early stop: no better val mIoU for {cfg.patience} epochs")
                    break
        except TrainingStopped:
            stopped = True
        summary = self._write_summary(start, finished=not stopped)
        self.emit("stopped" if stopped else "finished", epoch=epoch, data=summary)
        return summary

    def _write_summary(self, start: float, finished: bool) -> dict:
        import torch

        from engine.fileio import atomic_write_json

        best = next((r for r in self.history if r["epoch"] == self.best_epoch), None)
        summary = {
            "run": self.run_dir.name, "run_dir": str(self.run_dir), "finished": finished,
            "best_epoch": self.best_epoch, "best_score": self.best_miou, "best": best,
            "epochs_done": len(self.history), "total_seconds": round(time.perf_counter() - start, 1),
            "device": str(self.device), "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "mode": self.mode, "trained_parameters": self.n_trainable, "processes": self._world(),
            "torch": torch.__version__, "source_model": self.source_label, "log": self.log,
        }
        if getattr(self, "cache_build_s", None) is not None:
            summary["cache_build_seconds"] = round(self.cache_build_s, 2)
        if self.is_main:  # under data parallelism only the first process writes the run folder
            atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


def _processor_from(cfg: TrainConfig):
    from engine.models import image_processor

    return image_processor(cfg.image_size)


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness / contrast / colour jitter on a uint8 (S, S, 3) image."""
    x = img.astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.75, 1.25)
    x = x * rng.uniform(0.9, 1.1, size=3)
    return np.clip(x, 0, 255).astype(np.uint8)


def _accelerator():
    """An `accelerate.Accelerator` when launched by `accelerate launch` with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    return Accelerator(cpu=use_cpu)


def train(cfg: TrainConfig, on_event: Callable[[Event], None] | None = None, stop: threading.Event | None = None,
          *, resume: bool = False) -> dict:
    """Run one training job in the caller's thread; returns the run summary (also in summary.json).

    on_event gets Event(kind=step|epoch|checkpoint|phase|finished|stopped|failed). `stop.set()` ends the run
    within one step, keeping the last finished epoch's checkpoint. Errors are reported as a "failed" event and
    re-raised.
    """
    on_event = on_event or (lambda e: None)
    stop = stop or threading.Event()
    try:
        return _Trainer(cfg, on_event, stop, resume).run()
    except Exception as exc:
        on_event(Event("failed", data={"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
        raise


# ---------------------------------------------------------------------------------------------------------
# The background job (the app's Train tab)


class TrainingJob:
    """One training run at a time on a background thread, with a status snapshot at any moment."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._status = self._idle()

    @staticmethod
    def _idle() -> dict:
        return {"phase": "idle", "epoch": 0, "epochs": 0, "step": 0, "steps": 0, "eta_s": None, "message": "",
                "run_dir": None, "last_metrics": None, "history": [], "error": None, "log": []}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, cfg: TrainConfig, resume: bool = False) -> str:
        """Start `train(cfg)` in the background; returns the run folder. Raises JobRunning if one runs."""
        with self._lock:
            if self.running:
                raise JobRunning(f"a training job is already running ({self._status['run_dir']}); "
                                 "wait for it to finish or press Stop first.")
            self._stop = threading.Event()
            run_dir = str(Path(cfg.out) if Path(cfg.out).is_absolute() else REPO_ROOT / cfg.out)
            self._status = {**self._idle(), "phase": "preparing", "epochs": cfg.epochs, "run_dir": run_dir,
                            "started": time.time()}
            self._eta_origin: tuple[float, int] | None = None
            self._thread = threading.Thread(target=self._run, args=(cfg, resume), name="drywall-train", daemon=True)
            self._thread.start()
            return run_dir

    def _run(self, cfg: TrainConfig, resume: bool) -> None:
        try:
            train(cfg, self._on_event, self._stop, resume=resume)
        except Exception:  # reported through the "failed" event
            pass

    def _on_event(self, e: Event) -> None:
        with self._lock:
            s = self._status
            if e.kind == "step":
                s.update(step=e.step, steps=e.steps, epoch=e.epoch or s["epoch"])
                if e.data.get("phase") == "caching":
                    s["phase"] = "caching"
                elif e.epoch:
                    s["eta_s"] = self._eta(e, s["epochs"])
            elif e.kind == "phase":
                if e.data.get("phase") == "log":
                    s["log"] = [*s["log"], e.data["message"]]
                else:
                    s["phase"] = e.data.get("phase", s["phase"])
                    s["message"] = e.data.get("message", "")
            elif e.kind == "epoch":
                s["history"] = [*s["history"], e.data]
                s["last_metrics"] = e.data
            elif e.kind in ("finished", "stopped"):
                s.update(phase=e.kind, eta_s=0.0, message=f"{e.kind}: best epoch {e.data.get('best_epoch')}",
                         summary=e.data)
            elif e.kind == "failed":
                s.update(phase="failed", error=e.data["error"], message=e.data["error"])

    def _eta(self, e: Event, epochs: int) -> float | None:
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

    def status(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._status, default=str))


_JOB: TrainingJob | None = None
_JOB_LOCK = threading.Lock()


def get_job() -> TrainingJob:
    """The process's one training job (created on first use)."""
    global _JOB
    with _JOB_LOCK:
        if _JOB is None:
            _JOB = TrainingJob()
        return _JOB


# ---------------------------------------------------------------------------------------------------------
# Command line


def _parse_set(items: list[str]) -> dict:
    out = {}
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ValueError(f"--set {item}: unknown setting {key!r}; valid ones: {', '.join(sorted(names))}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cli_train(args) -> int:
    from tqdm import tqdm

    from engine.data import parse_data_arg

    data = [DataSpec(*parse_data_arg(d)) for d in args.data] or None
    overrides = dict(data=data, model=args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                     image_size=args.image_size, out=args.out, **_parse_set(args.set))
    cfg = make_config(args.preset, **overrides)
    bar = {"bar": None}

    def on_event(e: Event) -> None:
        if e.kind == "step":
            b = bar["bar"]
            desc = "caching" if e.data.get("phase") == "caching" else f"epoch {e.epoch}/{cfg.epochs}"
            if b is None or b.desc != desc:
                if b is not None:
                    b.close()
                b = bar["bar"] = tqdm(total=e.steps, desc=desc, unit="step", leave=False)
            b.update(e.step - b.n)
            if "loss" in e.data:
                b.set_postfix(loss=f"{e.data['loss']:.3f}")
        elif e.kind == "epoch":
            r = e.data
            scores = "  ".join(f"{p}: IoU {v['miou']:.3f} (best {v['best_miou']:.3f} @ {v['best_threshold']:.2f})"
                               for p, v in r["val"].items())
            tqdm.write(f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}  val loss {r['val_loss'] or float('nan'):.4f}  "
                       f"lr {r['lr']:.2e}  {r['seconds']:.0f}s  {scores}")
        elif e.kind == "phase" and e.data.get("phase") == "log":
            tqdm.write(e.data["message"])

    summary = train(cfg, on_event, resume=args.resume)
    if bar["bar"] is not None:
        bar["bar"].close()
    if int(os.environ.get("RANK", "0")) == 0:  # under data parallelism the first process reports
        if summary.get("best_epoch"):
            from engine.modelcard import write_card

            print(f"model card: {write_card(summary['run_dir'], threads=cfg.threads)}")
        print(f"{'finished' if summary.get('finished') else 'stopped'}: best epoch {summary.get('best_epoch')} "
              f"(score {summary.get('best_score', 0):.3f}), run folder {summary.get('run_dir')}")
    return 0


def _step_flops(trainer, pairs) -> float:
    """Matmul and convolution FLOPs (forward and backward) of one training step, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer._step(pairs)
    return counter.get_total_flops() / len(pairs)


def benchmark_train(threads: int = 2, repeats: int | None = None, n_images: int = 8, batch_size: int = 4) -> dict:
    """Seconds per training image: HF's plain forward every step vs the feature cache (decoder-only training).

    Full-size rd64-refined architecture with random weights, 352x352, fp32, `threads` CPU threads, real photos
    from ../shared; both ways run through the same `_Trainer` step code, side by side in one process.
    """
    import tempfile

    import torch

    from engine.models import full_size_config, make_random_model_folder
    from engine.segmenter import cpu_supports_bf16

    repeats = repeats or 3
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_random_model_folder(Path(tmp) / "model", full_size_config())
        cfg = make_config(None, model=str(model_dir), out=str(Path(tmp) / "run"), cache_dir=str(Path(tmp) / "cache"),
                          data=[DataSpec(str(SHARED_DATA / "cracks"), ("segment crack",))], max_train_images=n_images,
                          max_val_images=1, batch_size=batch_size, image_size=352, augment=False, amp=False,
                          threads=threads, epochs=1)
        trainer = _Trainer(cfg, lambda e: None, threading.Event(), resume=False)
        trainer.setup()  # builds the cache: the one-time cost
        build = trainer.cache_build_s / n_images
        pairs = [(0, i) for i in range(batch_size)]
        timings = {}
        precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if cpu_supports_bf16() else [])
        for _ in range(2):  # interleaved, so drift in machine load hits both ways alike
            for precision, dtype in precisions:
                trainer.amp_dtype = dtype
                for mode in ("plain", "cached"):
                    trainer.mode = mode
                    trainer._step(pairs)  # warm-up
                    start = time.perf_counter()
                    for _ in range(repeats):
                        trainer._step(pairs)
                    timings.setdefault((precision, mode), []).append((time.perf_counter() - start) / (repeats * batch_size))
        trainer.amp_dtype = None
        flops = {}
        for mode in ("plain", "cached"):
            trainer.mode = mode
            flops[mode] = _step_flops(trainer, pairs)
    best = {k: min(v) for k, v in timings.items()}
    plain, cached = best[("fp32", "plain")], best[("fp32", "cached")]
    result = {"plain_s_per_image": plain, "cached_s_per_image": cached, "speedup": plain / cached,
              "cache_build_s_per_image": build, "precision": "fp32",
              # The speed-up the arithmetic allows: matmul/conv FLOPs per image of each way, and the rate reached.
              "plain_gflop_per_image": flops["plain"] / 1e9, "cached_gflop_per_image": flops["cached"] / 1e9,
              "flop_ratio": flops["plain"] / flops["cached"],
              "plain_gflop_per_s": flops["plain"] / 1e9 / plain, "cached_gflop_per_s": flops["cached"] / 1e9 / cached}
    if ("bf16", "plain") in best:
        result["bf16_autocast"] = {"plain_s_per_image": best[("bf16", "plain")],
                                   "cached_s_per_image": best[("bf16", "cached")],
                                   "speedup": best[("bf16", "plain")] / best[("bf16", "cached")],
                                   "cached_speedup_vs_fp32_plain": plain / best[("bf16", "cached")]}
    return {**result, "threads": threads, "image_size": 352, "batch_size": batch_size,
            "images": n_images, "repeats": repeats, "architecture": "CIDAS/clipseg-rd64-refined (random weights)"}
