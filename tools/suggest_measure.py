"""Which answers to show first for correction: measures of doubt compared on labelled photos.

    python tools/suggest_measure.py [--model checkpoints/drywall-starter] [--share 0.2]

For every (photo, prompt) of the shared valid splits, each photo asked its own set's prompt and the other set's
(absent) prompt, the model's answer is "bad" when a present concept comes out with IoU under 0.3 or an absent
one is found. Each measure ranks the answers most doubtful first; the figure is the share of bad answers among
the first `--share` of the ranking (what a person correcting a batch's first fifth would fix), beside the
share of bad answers overall (a random order). The app uses the best of them (engine/app/labels.py, `suggest`).

Measures:
    presence margin    |presence - presence threshold|, smallest first: near the found / not found line
    pixel doubt        share of the map's candidate pixels (p >= t - 0.1) within 0.1 of the pixel threshold t
    low presence found found answers with the lowest presence, then not-found ones with the highest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from engine.data import open_dataset  # noqa: E402
from engine.models import load_segmenter  # noqa: E402
from engine.paths import SHARED_DATA, STARTER_DIR  # noqa: E402
from engine.prediction import sigmoid  # noqa: E402

SETS = {"cracks": "segment crack", "joints": "segment taping area"}
BAD_IOU = 0.3


def answers(model: str) -> list[dict]:
    """One record per (photo, prompt): bad or not, and the inputs of every measure."""
    seg = load_segmenter(model, precision="fp32")
    out = []
    for name, own in SETS.items():
        ds = open_dataset(SHARED_DATA / name, split="valid")
        for i in range(len(ds)):
            path = ds.items[i].image_path
            pred = seg.prediction(path, list(SETS.values()))
            truth = ds.mask(i)
            for prompt in SETS.values():
                found = pred.found(prompt)
                if prompt == own and truth.any():
                    mask = pred.mask(prompt, truth.shape[::-1])
                    iou = (mask & truth).sum() / max(1, (mask | truth).sum())
                    bad = iou < BAD_IOU
                elif prompt == own:
                    continue  # a photo of the set without its concept: not scored
                else:
                    bad = found
                prob = sigmoid(pred.logits[prompt])
                t = pred.thresholds[prompt]
                candidate = prob >= t - 0.1
                doubt = float((np.abs(prob - t) < 0.1).sum() / max(1, candidate.sum()))
                out.append({"bad": bool(bad), "found": found, "presence": pred.presence[prompt],
                            "tau": pred.presence_thresholds[prompt], "doubt": doubt})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(STARTER_DIR))
    parser.add_argument("--share", type=float, default=0.2, help="the first share of the ranking looked at")
    args = parser.parse_args(argv)
    records = answers(args.model)
    k = max(1, round(args.share * len(records)))
    bad = np.array([r["bad"] for r in records])
    keys = {
        "presence margin": [abs(r["presence"] - r["tau"]) for r in records],
        "pixel doubt": [-r["doubt"] for r in records],
        "low presence found": [(r["presence"] - r["tau"]) if r["found"] else (1 + r["tau"] - r["presence"])
                               for r in records],
    }
    figures = {"answers": len(records), "bad overall": round(float(bad.mean()), 3)}
    for name, key in keys.items():
        first = np.argsort(np.asarray(key), kind="stable")[:k]
        figures[f"bad in the first {args.share:.0%}: {name}"] = round(float(bad[first].mean()), 3)
    for line in figures.items():
        print(*line, sep=": ")
    return figures


if __name__ == "__main__":
    main()
