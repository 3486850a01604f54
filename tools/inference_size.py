"""Pick the input size a model runs at on photos it never saw in training, never on the valid splits.

    python tools/inference_size.py --model RUN_OR_FOLDER [--holdout-share 0.1] [--sizes 224,256,288,320,352]

The model must come from runs with `holdout_share` set (stage 1 and stage 2 alike), so that its held-out train
photos are unseen. For each size it sets each prompt's thresholds on the first 100 train photos per set (as the
starter preset does, `calibrate_on="train"`), then scores the held-out photos: own mIoU, false alarms of the
prompt on the other set's photos, presence AUROC. The score per prompt is half own mIoU plus half the share of
absent photos without a false alarm (the balance of `engine.calibrate`), averaged over the prompts; the best
size is printed last. How the bundled model's 288 px was picked: docs/training.md, "The bundled model's input size".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.calibrate import calibrate_model  # noqa: E402
from engine.evaluate import evaluate_sets  # noqa: E402
from engine.models import load_segmenter  # noqa: E402
from engine.train import make_config  # noqa: E402
from engine.train.sampling import open_sets  # noqa: E402


def score_sizes(model: str, sizes: list[int], holdout_share: float, images: int = 100) -> dict[int, dict]:
    """{size: {prompt: figures on the held-out photos}, with "score"} for the starter preset's sets."""
    sets = open_sets(make_config("starter", holdout_share=holdout_share))
    prompts = [s.prompts[0] for s in sets]
    seg = load_segmenter(model, precision="fp32")
    if seg.backend != "torch":  # an ONNX export's graphs are traced at one size
        raise ValueError(f"{model} is a {seg.backend} model; give the training run or model folder.")
    out = {}
    for size in sizes:
        seg.input_size = size
        calibration = calibrate_model(seg, [(s.train, [p]) for s, p in zip(sets, prompts)], images)
        seg.meta["thresholds"] = {p: c.threshold for p, c in calibration.items()}
        seg.meta["presence_thresholds"] = {p: c.presence_threshold for p, c in calibration.items()}
        report = evaluate_sets(seg, [(s.holdout, [p]) for s, p in zip(sets, prompts)], progress=False).to_dict()
        rows = {}
        for p in prompts:
            r = report["prompts"][p]
            rows[p] = {"n": r["n_images"], "miou": r["miou"], "false_alarm": r["absent"]["false_alarm_rate"],
                       "auroc": r["presence_auroc"], "threshold": r["threshold"]}
        score = sum((r["miou"] + 1 - r["false_alarm"]) / 2 for r in rows.values()) / len(rows)
        out[size] = {"prompts": rows, "score": score}
        line = " | ".join(f"{p}: mIoU {r['miou']:.3f} (n {r['n']}), false alarms {r['false_alarm']:.1%}, AUROC "
                          f"{r['auroc']:.3f}, threshold {r['threshold']:.2f}" for p, r in rows.items())
        print(f"{size} px: score {score:.3f} | {line}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run or model folder trained with holdout_share")
    parser.add_argument("--holdout-share", type=float, default=0.1)
    parser.add_argument("--sizes", default="224,256,288,320,352")
    parser.add_argument("--images", type=int, default=100, help="train photos per set that set the thresholds")
    args = parser.parse_args(argv)
    results = score_sizes(args.model, [int(s) for s in args.sizes.split(",")], args.holdout_share, args.images)
    best = max(results, key=lambda s: results[s]["score"])
    print(f"best: {best} px (score {results[best]['score']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
