"""Score a model on train photos it never saw (the replica's held-out photos), under three ways of setting its
thresholds, so that recipe and calibration choices are made there and the valid splits are looked at last.

    python tools/replica_scores.py --model RUN_OR_FOLDER [--holdout-share 0.1] [--json out.json]

The model must come from runs with `holdout_share` set (stage 1 and stage 2 alike), so that its held-out train
photos are unseen by every stage. Thresholds, per prompt:
- `model`: the ones the model ships with (its drywall_qa.json): scores on photos that set them are in-sample
  when the model was calibrated on these held-out photos (`calibrate_on="holdout"`), and fair otherwise;
- `train`: set on the first 100 train photos of each set, which the model has fitted (`calibrate_on="train"`);
- `holdout, 2-fold`: set on half the held-out photos and scored on the other half, then the other way round, so
  that every photo is scored by thresholds that never saw it (the fair estimate of `calibrate_on="holdout"`). A
  concept with fewer held-out photos than the preset's `holdout_min_photos` is set as training sets it: on its
  first train photos (which the other concepts then count as absent photos, as in training), its presence
  threshold keeping 95% of the fitting half's photos found.
Per prompt: mIoU on its own held-out photos, false alarms on the other set's held-out photos (a mask over 1% of
the photo), the best pixel threshold on them, and presence AUROC (which no threshold changes).

Then, at the model's thresholds, both concepts in one photo: every held-out joints photo twice, each time with the
cracks of a held-out crack photo moved onto it (engine/paste.py), scored for each prompt against its own part (the
taped area, the pasted cracks), beside the same prompt on the plain photos. No training photo is in them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.calibrate import calibrate_model  # noqa: E402
from engine.evaluate import evaluate_sets  # noqa: E402
from engine.models import load_segmenter  # noqa: E402
from engine.train import make_config  # noqa: E402
from engine.train.loop import held_out_or_train  # noqa: E402
from engine.train.sampling import open_sets  # noqa: E402


def set_thresholds(seg, calibration: dict) -> None:
    seg.meta["thresholds"] = {p: c.threshold for p, c in calibration.items()}
    seg.meta["presence_thresholds"] = {p: c.presence_threshold for p, c in calibration.items()}


def figures(seg, parts: list, prompts: list[str]) -> dict[str, dict]:
    """{prompt: n, miou, n_absent, false_alarm, auroc, threshold, best_threshold} of `seg` on (set, prompt) parts."""
    report = evaluate_sets(seg, [(ds, [p]) for ds, p in zip(parts, prompts)], progress=False).to_dict()
    out = {}
    for p in prompts:
        r = report["prompts"][p]
        out[p] = {"n": r["n_images"], "miou": r["miou"], "n_absent": r["absent"]["n_images"],
                  "false_alarm": r["absent"]["false_alarm_rate"], "auroc": r["presence_auroc"],
                  "threshold": r["threshold"], "best_threshold": r["best_threshold"]}
    return out


def pooled(folds: list[dict], prompts: list[str]) -> dict[str, dict]:
    """Two folds' figures as one: mIoU and false alarms weighted by their photo counts."""
    out = {}
    for p in prompts:
        n, n_absent = sum(f[p]["n"] for f in folds), sum(f[p]["n_absent"] for f in folds)
        out[p] = {"n": n, "n_absent": n_absent,
                  "miou": sum(f[p]["miou"] * f[p]["n"] for f in folds) / n,
                  "false_alarm": sum(f[p]["false_alarm"] * f[p]["n_absent"] for f in folds) / n_absent,
                  "threshold": [f[p]["threshold"] for f in folds]}
    return out


def replica_scores(model: str, holdout_share: float, images: int = 100) -> dict[str, dict]:
    """{way of setting thresholds: {prompt: figures}} on the held-out photos of the starter preset's sets, and
    {"both concepts": both_concepts(...)} at the model's own thresholds."""
    cfg = make_config("starter", holdout_share=holdout_share)
    sets = open_sets(cfg)
    prompts = [s.prompts[0] for s in sets]
    held = [s.holdout for s in sets]
    seg = load_segmenter(model, precision="fp32")
    if seg.backend != "torch":
        raise ValueError(f"{model} is a {seg.backend} model; give the training run or model folder.")
    out = {"model": figures(seg, held, prompts), "both concepts": both_concepts(seg, sets)}
    set_thresholds(seg, calibrate_model(seg, [(s.train, [p]) for s, p in zip(sets, prompts)], images))
    out["train"] = figures(seg, held, prompts)
    halves = [[ds.subset(range(k, len(ds), 2)) for ds in held] for k in (0, 1)]
    folds = []
    for fit, score in ((halves[0], halves[1]), (halves[1], halves[0])):
        pairs, unseen = [], {}
        for s, ds, p in zip(sets, fit, prompts):  # training's rule, decided on all of the set's held-out photos
            if held_out_or_train({"holdout": s.holdout, "train": s.train}, cfg.holdout_min_photos) is s.train:
                pairs.append((s.train, [p]))
                unseen[p] = ds
            else:
                pairs.append((ds, [p]))
        n = max(cfg.calibration_images, *(len(ds) for ds in fit))
        set_thresholds(seg, calibrate_model(seg, pairs, n, unseen=unseen))
        folds.append(figures(seg, score, prompts))
    out["holdout, 2-fold"] = pooled(folds, prompts)
    for p in prompts:  # presence AUROC depends on no threshold
        out["holdout, 2-fold"][p]["auroc"] = out["train"][p]["auroc"] = out["model"][p]["auroc"]
    return out


def both_concepts(seg, sets: list) -> dict[str, dict]:
    """{prompt: {n, miou, found, miou_plain}} of `seg` at its own thresholds: the taping prompt on the starter
    sets' held-out joints photos with held-out cracks pasted on, the crack prompt on the pasted cracks of the same
    composites (see the module docstring)."""
    import tempfile

    from engine.data import open_dataset
    from engine.paste import write_pasted_set

    (cracks, crack_prompt), (joints, taping_prompt) = [(s.holdout, s.prompts[0]) for s in sets]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, prompt, plain in (("base", taping_prompt, joints), ("lines", crack_prompt, cracks)):
            folder = write_pasted_set(Path(tmp) / label, joints, cracks, 2 * len(joints), label=label)
            ds = open_dataset(folder, prompts=[prompt])
            r = evaluate_sets(seg, [(ds, [prompt])], progress=False).to_dict()["prompts"][prompt]
            base = evaluate_sets(seg, [(plain, [prompt])], progress=False).to_dict()["prompts"][prompt]
            out[prompt] = {"n": r["n_images"], "miou": r["miou"], "found": r["found_rate"], "miou_plain": base["miou"]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run or model folder trained with holdout_share")
    parser.add_argument("--holdout-share", type=float, default=0.1)
    parser.add_argument("--images", type=int, default=100, help="train photos per set that set `train` thresholds")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    results = replica_scores(args.model, args.holdout_share, args.images)
    both = results.pop("both concepts")
    print("| thresholds | prompt | photos | mIoU | false alarms | presence AUROC | pixel threshold (best there) |")
    print("|---|---|---|---|---|---|---|")
    for way, rows in results.items():
        for p, r in rows.items():
            t = r["threshold"]
            t = " / ".join(f"{x:.2f}" for x in t) if isinstance(t, list) else f"{t:.2f}"
            best = f" ({r['best_threshold']:.2f})" if "best_threshold" in r else ""
            print(f"| {way} | {p} | {r['n']} | {r['miou']:.3f} | {r['false_alarm']:.1%} of {r['n_absent']} | "
                  f"{r['auroc']:.3f} | {t}{best} |")
    print("\n| prompt | composites | mIoU there (plain photos) | found on |\n|---|---|---|---|")
    for p, r in both.items():
        print(f"| {p} | {r['n']} | {r['miou']:.3f} ({r['miou_plain']:.3f}) | {r['found']:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "both concepts": both}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
