"""An inspector's teach session replayed without a browser: label, keep, teach, and score before and after.

    python tools/teach_benchmark.py [--model checkpoints/drywall-starter] [--photos 20] [--json out.json]

1. Generated walls with water stains (engine/synth.py, exact ground truth; a concept the bundled model never
   saw) are saved into a label set with `engine.data.labelset.save_label`, the function behind the app's
   "Save to my set": `--photos` walls with stains, plus a quarter as many stain-free walls marked "not in this
   photo". Another `--photos` stained walls (other seeds) are kept apart for scoring.
2. The `teach` preset trains on the set (`engine.train.teach.teach_config`, as the app's Teach button does),
   replaying photos of the shared sets where present, with a fresh feature cache: the minutes include it.
3. Before and after, at each model's own thresholds: mIoU of "segment water stain" on the scoring walls and its
   false alarms on the shared valid photos; mIoU of the old prompts on the shared valid splits (cracks/valid,
   joints/valid), each set's photos counted as absent for the other's prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine.data import open_dataset  # noqa: E402
from engine.data.labelset import save_label  # noqa: E402
from engine.evaluate import evaluate_sets  # noqa: E402
from engine.models import load_segmenter  # noqa: E402
from engine.paths import SHARED_DATA, STARTER_DIR  # noqa: E402
from engine.synth import EXAMPLE_VARIANTS, make_wall  # noqa: E402

NEW_PROMPT = "segment water stain"
OLD = {"cracks": "segment crack", "joints": "segment taping area"}


def stain_walls(out: Path, first_seed: int, n: int, stains: bool = True) -> list[tuple[Path, np.ndarray]]:
    """n generated walls (seeds first_seed...), with one or two stains or none, each beside maybe a crack and a
    joint; (photo path, stain mask)."""
    out.mkdir(parents=True, exist_ok=True)
    walls = []
    for seed in range(first_seed, first_seed + n):
        rng = np.random.default_rng(seed)
        size, _, _, lighting = EXAMPLE_VARIANTS[int(rng.integers(len(EXAMPLE_VARIANTS)))]
        image, masks = make_wall(seed, size, cracks=int(rng.integers(0, 2)), joints=int(rng.integers(0, 2)),
                                 lighting=lighting, stains=int(rng.integers(1, 3)) if stains else 0)
        path = out / f"wall_{seed}.jpg"
        image.save(path, quality=90)
        walls.append((path, masks.get("water stain", np.zeros(image.size[::-1], bool))))
    return walls


def as_mask_folder(walls, out: Path) -> Path:
    """The scoring walls as an images/ + masks/ set for engine.evaluate."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for path, mask in walls:
        (out / "images" / path.name).write_bytes(path.read_bytes())
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{path.stem}.png")
    return out


def score(model, stain_set, old_sets) -> dict:
    """The figures of one model: the new prompt on the stain walls, the old prompts on the shared valid sets."""
    seg = load_segmenter(model, precision="fp32")
    sets = [(stain_set, [NEW_PROMPT])] + [(ds, [OLD[name]]) for name, ds in old_sets.items()]
    report = evaluate_sets(seg, sets, progress=False).prompts
    out = {NEW_PROMPT: round(report[NEW_PROMPT].miou, 4)}
    absent = report[NEW_PROMPT].absent
    if absent is not None:
        out["stain false alarms"] = round(absent.false_alarm_rate, 4)
    for prompt in OLD.values():
        if prompt in report:
            out[prompt] = round(report[prompt].miou, 4)
            out[f"{prompt} at its best threshold"] = round(report[prompt].best_miou, 4)
            out[f"{prompt} thresholds"] = [round(report[prompt].threshold, 2),
                                           round(report[prompt].presence_threshold, 2)]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(STARTER_DIR), help="the model the inspector was using")
    parser.add_argument("--photos", type=int, default=20, help="stained walls labelled (and as many scored)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="copy the taught run to this folder")
    parser.add_argument("--replay-source", default="auto", choices=["auto", "shared", "generated"],
                        help="what is replayed: the shared sets (auto: where present) or generated walls")
    parser.add_argument("--own-photos", action="store_true",
                        help="also replay the set's own photos under the old prompts, taught the model's answers")
    parser.add_argument("--replay", type=int, default=None, help="shared photos replayed per set (default: the "
                                                                    "teach recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig override for trying recipes, e.g. --set epochs=30")
    args = parser.parse_args(argv)
    from engine.cli import _parse_set as parse_overrides
    from engine.train import train
    from engine.train.teach import teach_config

    with tempfile.TemporaryDirectory(prefix="teach-bench-") as tmp:
        tmp = Path(tmp)
        labelled = stain_walls(tmp / "photos", 7000, args.photos)
        plain = stain_walls(tmp / "plain", 7500, max(1, args.photos // 4), stains=False)
        start = time.perf_counter()
        for path, mask in labelled:
            save_label(tmp / "sets", "stains", path, NEW_PROMPT, mask, model=Path(args.model).name)
        for path, _ in plain:
            save_label(tmp / "sets", "stains", path, NEW_PROMPT, None, model=Path(args.model).name)
        save_s = time.perf_counter() - start
        stain_set = open_dataset(as_mask_folder(stain_walls(tmp / "scoring", 8000, args.photos), tmp / "scored"),
                                 name="stain walls")
        old_sets = {name: open_dataset(SHARED_DATA / name, split="valid", name=f"{name}/valid")
                    for name in OLD if (SHARED_DATA / name / "valid").is_dir()}
        before = score(args.model, stain_set, old_sets)
        replay = {"replay_source": args.replay_source, "own_photos": args.own_photos}
        replay |= {} if args.replay is None else {"replay": args.replay}
        cfg = teach_config([tmp / "sets" / "stains"], model=args.model, out=str(tmp / "run"), **replay,
                           cache_dir=str(tmp / "features"), **parse_overrides(args.set))
        start = time.perf_counter()
        summary = train(cfg)
        teach_s = time.perf_counter() - start
        after = score(tmp / "run", stain_set, old_sets)
        if args.keep:
            import shutil

            shutil.copytree(tmp / "run", args.keep, dirs_exist_ok=True)
    figures = {"model": str(args.model), "labelled photos": len(labelled), "absent marks": len(plain),
               "replay source": args.replay_source,
               "replayed photos": sum(d.max_images or len(list(Path(d.path, "masks").glob("*.png")))
                                      for d in cfg.data if d.val_split == "none"),
               "epochs": cfg.epochs, "image size": cfg.image_size, "save seconds": round(save_s, 1),
               "teach seconds": round(teach_s, 1), "cache seconds": summary.get("cache_build_seconds"),
               "before": before, "after": after,
               "change": {k: round(after[k] - before[k], 4) for k in before
                          if k in after and isinstance(before[k], float)}}
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
