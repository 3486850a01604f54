"""Teach: fine-tune the model a user was using on the label sets they corrected in the app, in minutes.

The `teach` preset (engine.train.config) holds the recipe; `teach_config` adds what depends on the moment: the
starting model and its input size, the user's sets, and the photos replayed so that the model keeps what it
knew. Replay: the first `REPLAY_PHOTOS` train photos of each shared set present under the data root (on a Space
they are not), under their usual prompts, never validated, taught the starting model's own answers for those
prompts (`replay_targets="teacher"`); they also serve as negatives for the new prompts (a photo of a crack is
not a water stain). Without the shared sets (a Space), generated walls of the same concepts (engine.synth) are
replayed instead: their labels do not matter, the starting model's answers are what they teach.
The benchmark `python tools/teach_benchmark.py` measures the recipe. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from engine.paths import DEFAULT_SETS, SHARED_DATA
from engine.train.config import DataSpec, TrainConfig, make_config

__all__ = ["REPLAY_PHOTOS", "replay_data", "teach_config", "model_input_size"]

REPLAY_PHOTOS = 80  # train photos replayed per shared set


# The generated walls replayed for a shared set that is not present: engine.synth's concept of each set.
GENERATED = {"cracks": "crack", "joints": "taping area"}


def replay_data(data_root: str | os.PathLike = SHARED_DATA, photos: int = REPLAY_PHOTOS,
                source: str = "auto") -> list[DataSpec]:
    """`photos` replayed photos per shared set, under its prompts, never validated. source: "shared" (the set's
    first train photos, when present under `data_root`), "generated" (walls of its concept from engine.synth,
    written once under .cache/synthetic), or "auto" (shared where present, else generated)."""
    if source not in ("auto", "shared", "generated"):
        raise ValueError(f"replay source must be 'auto', 'shared' or 'generated', not {source!r}.")
    specs = []
    for name, prompts in DEFAULT_SETS.items():
        root = Path(data_root) / name
        if not photos:
            continue
        if source != "generated" and (root / "train").is_dir():
            specs.append(DataSpec(str(root), tuple(prompts), val_split="none", max_images=photos))
        elif source != "shared":
            from engine.paths import in_repo
            from engine.synth import write_training_set

            folder = write_training_set(in_repo(".cache/synthetic") / f"replay-{name}-{photos}", GENERATED[name],
                                        photos, seed=20_000)
            specs.append(DataSpec(str(folder), tuple(prompts), val_split="none"))
    return specs


def own_photo_replay(label_sets: Sequence[str | os.PathLike]) -> list[DataSpec]:
    """The label sets' own photos again under the shared sets' prompts, never validated: with the teacher's
    answers as targets (`replay_targets="teacher"`) the model learns to answer the old prompts on the new photos
    as it did before, whatever their masks hold. Prompts a set labels itself are left to its own masks."""
    from engine.data.labelset import is_label_set, label_set_splits

    specs = []
    for path in label_sets:
        if not is_label_set(path):
            continue
        for folder, prompt in label_set_splits(path):
            for prompts in DEFAULT_SETS.values():
                if prompt not in prompts:
                    specs.append(DataSpec(str(folder), tuple(prompts), train_split=None, val_split="none",
                                          negatives=False))
    return specs


def model_input_size(source: str) -> int:
    """The input size a model runs at (its preprocessor's), 352 (CLIPSeg's) when it does not say."""
    from engine.models.sources import resolve_source

    folder = resolve_source(source).path
    for candidate in (folder / "preprocessor_config.json", folder / "best" / "preprocessor_config.json"):
        if candidate.is_file():
            size = json.loads(candidate.read_text()).get("size") or {}
            value = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
            if value:
                return int(value)
    return 352


def teach_config(label_sets: Sequence[str | os.PathLike], *, model: str, out: str | os.PathLike,
                 data_root: str | os.PathLike = SHARED_DATA, replay: int = REPLAY_PHOTOS,
                 replay_source: str = "auto", own_photos: bool = False, **overrides) -> TrainConfig:
    """The `teach` preset for `label_sets` (folders of engine.data.labelset), starting from `model` (any model
    source) at its own input size, with `replay` photos of each shared set present. overrides: TrainConfig
    fields applied last (the app's caps, a test's tiny sizes)."""
    if not label_sets:
        raise ValueError("Pick one of your label sets to teach from (save corrected masks to a set first).")
    data = [DataSpec(str(path), ()) for path in label_sets] + replay_data(data_root, replay, replay_source)
    if own_photos:
        data += own_photo_replay(label_sets)
    size = overrides.pop("image_size", None) or model_input_size(model)
    return make_config("teach", data=data, model=model, out=str(out), image_size=size, **overrides)
