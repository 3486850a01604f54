"""Would a learnt presence score beat the map's? A linear probe on a model's frozen decoder tokens, measured.

    python tools/presence_probe.py --model checkpoints/drywall-starter [--holdout-share 0.1] [--json out.json]

Presence today is read off the mask map (engine.prediction.presence_score: its strongest 3 x 3 patch). A
presence head, a photo-level classifier on the decoder's features, would change the model files, the ONNX graph
and both backends, so this asks first whether the features hold a better answer than the map. Per (photo,
prompt) it takes the last decoder layer's tokens (before the transposed convolution), pooled three ways (the
class token, the mean and the maximum of the patch tokens: 3 x reduce_dim numbers), alone and with the map's
presence score as one more input, and fits an L2 logistic regression per prompt on the real train photos of the
starter preset's sets (generated walls left out; the held-out share of the replica never trained on). It is
scored on the held-out photos and on the valid splits: presence AUROC (own photos with the concept against the
other set's photos), and false alarms on the other set's photos at the score that keeps 95% of the held-out
photos with the concept found, the same rule applied to the map's score for comparison. The ridge strength
is the one with the fewest held-out false alarms (then the highest held-out AUROC); the valid rows are read last.

The probe sees frozen features of a decoder trained for masks, and is fitted on photos that decoder has fitted
(where presence runs high, engine/calibrate.py): a head trained with the decoder could do better. The model must
come from runs with the same `--holdout-share` (the bundled model's stages used 0.1), or its held-out photos are
not unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.calibrate import MIN_FOUND  # noqa: E402
from engine.evaluate import auroc  # noqa: E402
from engine.models import load_segmenter  # noqa: E402
from engine.prediction import presence_score, sigmoid  # noqa: E402
from engine.train import make_config  # noqa: E402
from engine.train.sampling import open_sets  # noqa: E402

FOUND = MIN_FOUND  # share of the held-out photos with the concept that a score's threshold keeps found (95%)
L2 = (1e-3, 1e-2, 1e-1)  # ridge strengths tried, on standardised features


def photo_features(seg, sets, split: str) -> dict[str, np.ndarray]:
    """Decoder tokens pooled and map presence for every (photo, prompt) of `split` ("train", "holdout", "valid").

    Returns X (N, 3 * reduce_dim) float32, map_presence (N,), prompt (N,) int (the index of the set whose first
    prompt was asked), present (N,) bool (the photo is its own set's and its label is not empty), own (N,) bool.
    Rows run photo by photo, each photo's prompts in set order.
    """
    prompts = [s.prompts[0] for s in sets]
    tokens = {}

    def keep_tokens(_module, _args, output):  # the last decoder layer: (P, 1 + g * g, reduce_dim)
        tokens["x"] = (output[0] if isinstance(output, tuple) else output).detach()

    hook = seg.model.decoder.layers[-1].register_forward_hook(keep_tokens)
    rows = {k: [] for k in ("X", "map_presence", "prompt", "present", "own")}
    try:
        for si, s in enumerate(sets):
            ds = {"train": s.train, "holdout": s.holdout, "valid": s.val}[split]
            n = len(ds) - (s.spec.synthetic_walls if split == "train" else 0)  # the generated walls come last
            for i in range(n):
                image, label = ds[i]
                tokens.clear()
                logits = np.asarray(seg.logits(seg.preprocess([image]), prompts), np.float32)[0]
                x = tokens["x"]
                if x.shape[0] != len(prompts):
                    raise RuntimeError(f"decoder tokens for {x.shape[0]} rows, expected one per prompt")
                pooled = torch.cat([x[:, 0], x[:, 1:].mean(1), x[:, 1:].amax(1)], 1).float().numpy()
                for pi in range(len(prompts)):
                    rows["X"].append(pooled[pi])
                    rows["map_presence"].append(presence_score(sigmoid(logits[pi])))
                    rows["prompt"].append(pi)
                    rows["own"].append(pi == si)
                    rows["present"].append(pi == si and bool(np.asarray(label).any()))
    finally:
        hook.remove()
    return {k: np.asarray(v) for k, v in rows.items()}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float):
    """L2 logistic regression on standardised x (N, F), y (N,) in {0, 1}; returns a scorer x -> logits (N,)."""
    x_t, y_t = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    mean, std = x_t.mean(0), x_t.std(0) + 1e-6
    z = (x_t - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y_t) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda new: (((torch.as_tensor(new, dtype=torch.float64) - mean) / std) @ w + b).detach().numpy()


def inputs(part: dict, pick: np.ndarray, with_map: bool) -> np.ndarray:
    """The probe's inputs for the rows `pick`: pooled tokens, and the map presence as a logit when asked."""
    x = part["X"][pick]
    if not with_map:
        return x
    p = np.clip(part["map_presence"][pick], 1e-6, 1 - 1e-6)
    return np.concatenate([x, np.log(p / (1 - p))[:, None]], 1)


def found_threshold(positives: np.ndarray, found: float = FOUND) -> float:
    """The highest score threshold that keeps at least `found` of `positives` at or above it."""
    ranked = np.sort(np.asarray(positives, float))
    return float(ranked[int(np.floor(len(ranked) * (1 - found) + 1e-9))])


def scored(hold: np.ndarray, hold_y: np.ndarray, valid: np.ndarray, valid_y: np.ndarray) -> dict:
    """AUROC on both, and false alarms / found at the threshold keeping FOUND of the held-out positives.

    hold, valid: (N,) scores; hold_y, valid_y: (N,) bool, True where the concept is there."""
    t = found_threshold(hold[hold_y])
    return {"threshold": t, "auroc_holdout": auroc(hold[hold_y], hold[~hold_y]),
            "auroc_valid": auroc(valid[valid_y], valid[~valid_y]),
            "false_alarm_holdout": float(np.mean(hold[~hold_y] >= t)),
            "found_holdout": float(np.mean(hold[hold_y] >= t)),
            "false_alarm_valid": float(np.mean(valid[~valid_y] >= t)),
            "found_valid": float(np.mean(valid[valid_y] >= t))}


def rows_for(part: dict, prompt: int) -> tuple[np.ndarray, np.ndarray]:
    """(pick, present) of one prompt's rows: its own photos with the concept (positives) and the other sets'
    photos (absent); its own photos with an empty label are left out, as evaluation leaves them out of AUROC."""
    pick = (part["prompt"] == prompt) & (part["present"] | ~part["own"])
    return pick, part["present"][pick]


def probe(model: str, holdout_share: float) -> dict[str, dict[str, dict]]:
    """{prompt: {score name: figures}} for the map's presence and each probe."""
    sets = open_sets(make_config("starter", holdout_share=holdout_share))
    seg = load_segmenter(model, precision="fp32")
    if seg.backend != "torch":
        raise ValueError(f"{model} is a {seg.backend} model; give the training run or model folder.")
    if not holdout_share:
        raise ValueError("the probe is scored on held-out train photos: give --holdout-share above 0")
    parts = {split: photo_features(seg, sets, split) for split in ("train", "holdout", "valid")}
    out = {}
    for pi, s in enumerate(sets):
        pick, y = {}, {}
        for k, d in parts.items():
            pick[k], y[k] = rows_for(d, pi)
        rows = {"map presence": scored(parts["holdout"]["map_presence"][pick["holdout"]], y["holdout"],
                                       parts["valid"]["map_presence"][pick["valid"]], y["valid"])}
        for with_map in (False, True):
            tried = []
            for l2 in L2:
                score = fit_logistic(inputs(parts["train"], pick["train"], with_map), y["train"], l2)
                tried.append(scored(score(inputs(parts["holdout"], pick["holdout"], with_map)), y["holdout"],
                                    score(inputs(parts["valid"], pick["valid"], with_map)), y["valid"]))
                rows[f"probe{' + map' if with_map else ''}, l2 {l2:g}"] = tried[-1]
            # of the ridge strengths, the one chosen on the held-out photos
            min(tried, key=lambda r: (r["false_alarm_holdout"], -(r["auroc_holdout"] or 0)))["chosen"] = True
        out[s.prompts[0]] = rows
    return out


def _number(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run or model folder trained with holdout_share")
    parser.add_argument("--holdout-share", type=float, default=0.1)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    results = probe(args.model, args.holdout_share)
    print("| prompt | score | AUROC held out / valid | false alarms held out / valid | found held out / valid |")
    print("|---|---|---|---|---|")
    for prompt, rows in results.items():
        for name, r in rows.items():
            mark = " (chosen on held out)" if r.get("chosen") else ""
            print(f"| {prompt} | {name}{mark} | {_number(r['auroc_holdout'])} / {_number(r['auroc_valid'])} | "
                  f"{r['false_alarm_holdout']:.1%} / {r['false_alarm_valid']:.1%} | "
                  f"{r['found_holdout']:.1%} / {r['found_valid']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
