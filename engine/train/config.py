"""What a training run is told: the data sets and their prompts, `TrainConfig`, and presets of overrides.

`asdict(cfg)` is saved as the run folder's config.json; `config_from_json` reads it back (for --resume).
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.paths import DEFAULT_SETS, FEATURE_CACHE_DIR, SHARED_DATA, in_repo


@dataclass
class DataSpec:
    """A labelled set and its prompts (synonyms). `path`: a YOLOv8 root, a split folder, a COCO json, ..."""

    path: str
    prompts: tuple[str, ...]
    train_split: str | None = "train"  # used when `path` is a root with several splits
    # The split validated on: a split folder's name; "none": not validated (photos replayed so that a model keeps
    # what it knew); "train": its own training photos (a set too small to spare any). Missing: 15% held out.
    val_split: str | None = "valid"
    max_images: int = 0  # train photos taken from this set (its first N); 0: all (cfg.max_train_images still caps)
    # False: its photos are never paired with another set's prompt as a negative. For sets labelled for some
    # prompts only (a label set), whose photos may well hold what another set's prompt asks for.
    negatives: bool = True
    # Generated walls (engine.synth) that hold only this set's concept ("crack" or "taping area"), added after
    # its real training photos (so calibration's first N train photos are real ones); never to validation.
    synthetic_concept: str = ""
    synthetic_walls: int = 0
    # Of those walls, how many also hold the other concept (labelled with this set's only): the model learns to
    # find its concept beside the other one. Such a wall is never a negative for the other set's prompts.
    synthetic_mixed: int = 0
    # Composites of two sets' real train photos (engine.paste): the labelled lines (cracks) of one moved onto the
    # photos of another. `pasted_lines` of them, with `pasted_lines_from` naming (by path) the set whose lines
    # this set's photos receive, labelled with this set's mask; or `pasted_lines_onto` naming the set whose
    # photos receive this set's lines, labelled with the lines. Without photos holding both, every crack photo
    # is a taping negative, and a crack anywhere turns the taping answer off. Like mixed walls, never negatives.
    pasted_lines: int = 0
    pasted_lines_from: str = ""
    pasted_lines_onto: str = ""
    # True: the receiving set's generated walls receive lines too (its real photos and walls taken in turn); a
    # model can learn the shortcut on generated walls apart from real photos.
    pasted_on_walls: bool = False


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
    # The size the saved model runs at (its preprocessor config), and validation and calibration with it; 0: image_size.
    # The position embeddings are interpolated (CLIPSeg supports any multiple of the patch size).
    inference_size: int = 0
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 0.0
    presence_weight: float = 0.0  # BCE of the photo-level presence score (losses.presence_loss)
    presence_on_positives: bool = True  # False: the presence loss scores negatives only
    dice_on_empty: bool = True  # False: samples with empty targets (negatives) get no Dice term, only BCE etc.
    bce_on_empty: float = 1.0  # weight of the pixel BCE on samples with empty targets (negatives), against others'
    schedule: str = "cosine"  # "cosine" (linear warm-up, cosine decay) or "plateau" (halve on a val plateau)
    warmup_epochs: float = 0.5
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better val mIoU before stopping early; 0 = never
    seed: int = 0
    train: str = "decoder"  # "decoder" (CLIPSeg paper recipe), "last_n", or "all"
    unfreeze_vision_layers: int = 0  # with train="last_n": the last N layers the decoder reads up to
    unfreeze_text_layers: int = 0
    amp: bool = True  # CUDA: fp16 autocast + GradScaler. CPU: bf16 autocast where asked or measured faster
    # "auto": fp16 on CUDA; on the CPU, a run that trains the tower measures its own training step in fp32 and
    # bf16 and keeps the faster (engine.train.precision), a decoder-only run stays fp32. Or "fp16", "bf16", "fp32".
    amp_dtype: str = "auto"
    device: str = "auto"
    threads: int | None = None  # CPU threads; applied by the entry point (`python -m engine train`), not here
    feature_cache: bool = True
    cache_dir: str = FEATURE_CACHE_DIR
    cache_dtype: str = "float16"
    # The precision the frozen tower runs in while caching: "auto" (the faster of fp32 and bf16 as measured on
    # this CPU, checked against fp32 on the first photo), "fp32" or "bf16".
    cache_precision: str = "auto"
    # K augmented views cached per image (with augment on). 2 scored as well as 4 and halves the cache build;
    # flipping / turning the cached token grid instead (cache_grid_augment) cost 0.04-0.06 mIoU: a ViT's tokens
    # carry their position, so a turned grid is not a turned photo (bash tools/cache_quality.sh measures both).
    cache_views: int = 2
    cache_grid_augment: bool = False
    augment: bool = True
    set_balance: float = 0.5  # sampling weight ∝ len(set) ** set_balance (0: sets equal, 1: by size)
    # Share of training samples that pair a photo with another set's prompt and an empty target (the concept
    # asked for is absent), so that a prompt for something absent gives nothing. Needs two or more sets.
    negative_rate: float = 0.3
    # Hard negatives: 0 draws every photo as a negative alike; h in (0, 1] draws a photo as a negative in
    # proportion (1 - h) + h * area / mean area, where area is how much of it the starting model marks for the
    # other sets' prompts (the photos where they fire). Cached (decoder-only) runs only.
    hard_negatives: float = 0.0
    negative_start: float = 0.0  # share of the run's steps before negatives begin (a model from scratch: 0.3)
    max_train_images: int | None = None  # per set, for quick runs
    max_val_images: int | None = None
    scratch_arch: dict = field(default_factory=dict)  # CLIPSegConfig overrides for model="scratch"
    foreground_prior: float = 0.05
    film_init_std: float = 1e-3  # model="scratch": noise on the FiLM layers' identity init
    select: str = "best"  # "best": keep the epoch with the best val score; "last": the final epoch
    # Split whose photos set the thresholds: "valid", "train" (the first calibration_images train photos, which
    # the model has fitted: their best threshold runs higher than unseen photos'), or "holdout" (holdout_share of
    # each set's train photos, kept out of training).
    calibrate_on: str = "valid"
    calibration_images: int = 100  # per set, with calibrate_on="train" or "holdout" (the first N, un-augmented)
    calibrate_every: int = 1  # epochs between calibrations (the first and last epochs always calibrate)
    # "keep": prompts whose sets are all replayed (val_split "none") keep the starting model's thresholds;
    # "calibrate": every prompt is calibrated.
    replay_thresholds: str = "calibrate"
    # What a replayed photo (val_split "none") is taught for the prompts of the replayed sets: "labels", its
    # ground truth; "teacher", the starting model's own answer (its probability map), so that the model learns
    # to keep answering those prompts as it did (learning without forgetting) instead of fitting a few photos.
    replay_targets: str = "labels"
    # Share of each set's train photos (whole source photos, the same ones in every run, whatever the seed) that
    # training never sees; a run fine-tuned from a model with the same share keeps them unseen too.
    holdout_share: float = 0.0
    # With calibrate_on="holdout": a concept with fewer held-out photos than this sets its thresholds on its train
    # photos instead (a handful of photos gives thresholds that swing more than the train photos' bias).
    holdout_min_photos: int = 0

    @property
    def model_size(self) -> int:
        """The input size the saved model runs at, and validates and calibrates at: inference_size or image_size."""
        return self.inference_size or self.image_size


# Presets hold only what differs from the defaults.
PRESETS: dict[str, dict] = {
    "default": {},
    "quick": {"epochs": 2, "max_train_images": 32, "max_val_images": 16},
    "tiny": {"epochs": 2, "batch_size": 2, "image_size": 64, "max_train_images": 6, "max_val_images": 4,
             "feature_cache": False, "warmup_epochs": 0},
    "full": {"train": "last_n", "unfreeze_vision_layers": 2, "lr": 2e-4, "epochs": 20, "feature_cache": False},
    # The bundled model in two stages, both with 10% of each set's train photos held out (holdout_share; the same
    # photos in both stages), so that the shipped model is its own replica: scored on photos neither stage trained
    # on, where recipe choices are made (tools/replica_scores.py), before the valid splits are looked at.
    # starter-base trains a small CLIPSeg from scratch (100 epochs at lr 5e-4, 55 min on 2 cores in bf16, which
    # measured 2.5x faster there than fp32; at lr 1e-3 one 100-epoch run diverged at epoch 12 and never came
    # back). starter fine-tunes its decoder with half the samples absent-concept negatives, drawn more often from
    # the photos where the base's answer for the other concept is a false alarm (hard_negatives), the presence
    # loss, and 40 generated walls per set (so that the app's example walls, made by the same generator, come out
    # right; with 20 of them holding both concepts, synthetic_mixed, train photos set taping's threshold at 0.70,
    # costing 0.10 mIoU, and no more examples came out right). Thresholds are set on the held-out photos, but for
    # a concept with fewer than 30 of them (the joints set holds 11), which uses the first 100 train photos and
    # keeps 95% of its held-out ones found (engine/train/loop.py `calibrate`). The valid splits stay unseen: no
    # epoch is picked on them (select=last). It runs at 288 px (inference_size), picked on held-out train photos
    # with tools/inference_size.py (docs/training.md, "The bundled model's input size").
    "starter": {
        "data": [{"path": str(SHARED_DATA / name), "prompts": DEFAULT_SETS[name], "synthetic_concept": concept,
                  "synthetic_walls": 40} for name, concept in (("cracks", "crack"), ("joints", "taping area"))],
        "model": "checkpoints/drywall-starter-base", "out": "checkpoints/drywall-starter", "train": "decoder",
        "epochs": 30, "image_size": 224, "inference_size": 288, "negative_rate": 0.5, "patience": 0,
        "cache_precision": "bf16",
        # Dice on an empty target pushes the whole map towards 0, and a strong presence loss costs the masks'
        # quality: both cost crack mIoU in the runs that chose these settings.
        "presence_weight": 0.3, "dice_on_empty": False, "hard_negatives": 0.5,
        "select": "last", "calibrate_on": "holdout", "holdout_share": 0.1, "holdout_min_photos": 30,
    },
    # Fine-tuning on a user's label sets from the model they used (engine.train.teach adds the data, the model
    # and its size): the decoder alone on cached features, so 20 photos train in a coffee break on 2 cores;
    # the starter's loss settings; the last epoch kept and the new prompts' thresholds set on the training
    # photos (a small set has no photos to spare). The replayed shared photos learn the starting model's own
    # answers and their prompts keep its thresholds: with their labels instead, crack mIoU on cracks/valid fell
    # 0.045 (0.107 with the thresholds set again on them), with the teacher's answers it rose 0.011
    # (tools/teach_benchmark.py; docs/training.md, "Teach").
    "teach": {
        "train": "decoder", "feature_cache": True, "epochs": 20, "lr": 3e-4, "warmup_epochs": 1, "patience": 0,
        "negative_rate": 0.3, "presence_weight": 0.3, "dice_on_empty": False, "set_balance": 0.5,
        "select": "last", "calibrate_on": "train", "calibration_images": 60, "calibrate_every": 5,
        "replay_thresholds": "keep", "replay_targets": "teacher",
    },
    "starter-base": {
        "model": "scratch", "out": "checkpoints/drywall-starter-base", "train": "all", "feature_cache": False,
        "epochs": 100, "lr": 5e-4, "weight_decay": 0.05, "batch_size": 16, "image_size": 224,
        "patience": 0, "warmup_epochs": 2, "set_balance": 0.5, "film_init_std": 0.05,
        # No negatives: it learns what the concepts look like, and stage 2 learns to tell them apart. (Negatives
        # from 30% of the run on cost it crack mIoU, 0.382 -> 0.364; from the first step they kept it at an empty
        # mask.)
        "negative_rate": 0.0,
        "select": "last", "calibrate_on": "holdout", "holdout_share": 0.1,
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

# Settings with a fixed set of values: name -> the values allowed.
_CHOICES = {"train": ("decoder", "last_n", "all"), "select": ("best", "last"),
            "calibrate_on": ("valid", "train", "holdout"), "replay_thresholds": ("calibrate", "keep"),
            "replay_targets": ("labels", "teacher"), "amp_dtype": ("auto", "fp16", "bf16", "fp32"),
            "schedule": ("cosine", "plateau"), "cache_precision": ("auto", "fp32", "bf16")}


def default_data() -> list[DataSpec]:
    """The sets in ../shared (engine.paths.DEFAULT_SETS) with the prompts inspectors type."""
    return [DataSpec(str(SHARED_DATA / name), prompts) for name, prompts in DEFAULT_SETS.items()]


# A label set's prompt with fewer photos than this validates on its training photos (and the run says so);
# with more, 15% of its photos (whole photos) are held out for validation.
LABEL_SET_VALIDATION_PHOTOS = 30


def expand_label_sets(specs: list[DataSpec]) -> list[DataSpec]:
    """Each label set (engine.data.labelset) in `specs` as one DataSpec per prompt folder, with the set's own
    prompt (and the prompts given, as synonyms, when the set has one prompt); other specs as they are.

    A label set's photos were labelled for some prompts only, so they are never negatives for another set's
    prompt (`negatives=False`); its absent marks (empty masks) are its negatives. Raises ValueError when prompts
    are given for a set of several prompts (each folder has its own).
    """
    from engine.data.labelset import is_label_set, label_set_splits

    out = []
    for spec in specs:
        if not is_label_set(spec.path):
            out.append(spec)
            continue
        splits = label_set_splits(spec.path)
        if not splits:
            raise ValueError(f"Label set {Path(spec.path).name!r} holds no masks yet; save some to it first.")
        if spec.prompts and len(splits) > 1:
            raise ValueError(f"Label set {Path(spec.path).name!r} has its own prompts ("
                             f"{', '.join(p for _, p in splits)}); give it without prompts.")
        for folder, prompt in splits:
            photos = sum(1 for p in (folder / "masks").iterdir() if p.suffix == ".png")
            prompts = tuple(dict.fromkeys([prompt, *spec.prompts]))
            out.append(dataclasses.replace(spec, path=str(folder), prompts=prompts, train_split=None,
                                           val_split="train" if photos < LABEL_SET_VALIDATION_PHOTOS else None,
                                           negatives=False))
    return out


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from the defaults, a preset's overrides, then explicit overrides (None values ignored).

    Raises ValueError naming an unknown preset or setting, or a setting outside its allowed values.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    values = {**PRESETS.get(preset or "default", {}), **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown training setting(s) {unknown}; valid ones: {', '.join(sorted(names))}.")
    data = values.pop("data", None) or default_data()
    values["data"] = expand_label_sets([d if isinstance(d, DataSpec) else DataSpec(**d) for d in data])
    cfg = TrainConfig(**values)
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            choices = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise ValueError(f"{name} must be {choices}, not {getattr(cfg, name)!r}.")
    if not 0.0 <= cfg.negative_rate < 1.0:
        raise ValueError(f"negative_rate is a share of training samples in [0, 1), not {cfg.negative_rate!r}.")
    if not 0.0 <= cfg.negative_start <= 1.0:
        raise ValueError(f"negative_start is a share of the run's steps in [0, 1], not {cfg.negative_start!r}.")
    if not 0.0 <= cfg.holdout_share < 1.0:
        raise ValueError(f"holdout_share is a share of the train photos in [0, 1), not {cfg.holdout_share!r}.")
    if not 0.0 <= cfg.hard_negatives <= 1.0:
        raise ValueError(f"hard_negatives is a strength in [0, 1], not {cfg.hard_negatives!r}.")
    if cfg.bce_on_empty < 0:
        raise ValueError(f"bce_on_empty is a weight >= 0 (1: a negative's pixels count as others'), "
                         f"not {cfg.bce_on_empty!r}.")
    for spec in cfg.data:
        if spec.pasted_lines < 0 or spec.pasted_lines and bool(spec.pasted_lines_from) == bool(spec.pasted_lines_onto):
            raise ValueError(f"Data set {spec.path}: pasted_lines is a number of composites >= 0, with either "
                             f"pasted_lines_from (the data set whose lines this set's photos receive) or "
                             f"pasted_lines_onto (the data set whose photos receive this set's lines), as a path; "
                             f"got {spec.pasted_lines!r}, from {spec.pasted_lines_from!r}, onto "
                             f"{spec.pasted_lines_onto!r}.")
    if cfg.calibrate_on == "holdout" and not cfg.holdout_share:
        raise ValueError("calibrate_on=\"holdout\" needs photos held out: set holdout_share, e.g. 0.1.")
    if cfg.inference_size < 0:
        raise ValueError(f"inference_size is a size in pixels, or 0 for image_size; not {cfg.inference_size!r}.")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.calibrate_every < 1:
        raise ValueError("epochs, batch_size and calibrate_every must be >= 1 and lr > 0.")
    return cfg


def config_from_json(path) -> TrainConfig:
    """The TrainConfig saved as a run's config.json (data entries back to DataSpec, prompts to tuples)."""
    values = json.loads(Path(path).read_text())
    values["data"] = [DataSpec(**{**d, "path": str(in_repo(d["path"])), "prompts": tuple(d["prompts"])})
                      for d in values["data"]]  # fields added since a run was saved take their defaults
    return make_config(None, **values)


def run_folder(cfg: TrainConfig) -> Path:
    """The run folder `cfg.out`, relative to the repository root unless absolute."""
    return in_repo(cfg.out)
