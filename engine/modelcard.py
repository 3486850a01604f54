"""A model card (README.md) for a training run: how it was trained, on what, and its scores.

The scores come from `engine.evaluate.evaluate_sets` at each prompt's own threshold on every set's validation
split, each prompt also run on the other sets' photos as an absent concept, so `python -m engine evaluate
--model RUN --data SET/valid=PROMPTS --data OTHER/valid=PROMPTS` reproduces them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from engine.calibrate import MIN_FOUND
from engine.data import open_dataset
from engine.evaluate import evaluate_sets
from engine.fileio import atomic_write_json, atomic_write_text
from engine.models import load_segmenter
from engine.paths import DEFAULT_HUB_ID, in_repo, portable

ATTRIBUTION = {
    "cracks": '"cracks-3ii36" by 10xConstruction (Roboflow Universe; re-export vaibhav-tiwari/cracks-3ii36-ggtdw), '
              "CC BY 4.0",
    "joints": '"drywall-join-detect" by objectdetect-pu6rn (Roboflow Universe; re-export '
              "vaibhav-tiwari/drywall-join-detect-bbaep), CC BY 4.0",
}


def evaluate_run(run_dir, threads: int | None = None) -> dict:
    """{set name: {prompt: PromptReport.to_dict() row}} on each training set's validation split; with several
    sets each row also holds its absent-concept figures on the other sets' photos."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    segmenter = load_segmenter(run_dir, threads=threads, precision="fp32")
    sets = []
    for spec in cfg["data"]:
        if spec.get("val_split") == "none":  # photos replayed, not validated
            continue
        root = in_repo(spec["path"])
        split = spec.get("val_split") or "valid"
        dataset = open_dataset(root / split if (root / split).is_dir() else root, prompts=tuple(spec["prompts"]),
                               name=f"{root.name}/{split}")
        sets.append((dataset, list(spec["prompts"])))
    rows = evaluate_sets(segmenter, sets, progress=False).to_dict()["prompts"]
    results = {str(ds.name): {p: rows[p] for p in prompts} for ds, prompts in sets}
    return {"threshold": segmenter.threshold, "sets": results}


def _relative(path: str) -> str:
    return portable(path)


def render_card(run_dir, scores: dict) -> str:
    """The README.md text for a run, from its config.json, summary.json and `evaluate_run` scores."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    model_cfg = json.loads((run_dir / "best" / "config.json").read_text())
    vision = model_cfg["vision_config"]
    size_mb = sum(f.stat().st_size for f in (run_dir / "best").iterdir()) / 1e6
    lines = [
        f"# {run_dir.name}", "",
        "A compact CLIPSeg trained **from scratch** on CPU for Drywall QA. It exists so the app and the command "
        "line work offline, where the pretrained `CIDAS/clipseg-rd64-refined` cannot be downloaded. "
        "Public projects that fine-tuned pretrained CLIPSeg on Roboflow's own (leakier) splits of these sets report "
        "0.45-0.56 crack IoU and 0.52-0.66 taping IoU, and 0.05-0.23 / 0.02-0.17 for it zero-shot (their figures, "
        "not measured here: the Hub is unreachable from where this model was trained). Training in the app starts "
        "from `auto`, the pretrained Hub model wherever the Hub is reachable. It learned only the "
        "prompts listed under Data (synonyms within a set give the same mask); other text gives meaningless masks.", "",
        "## Architecture", "",
        f"CLIPSegForImageSegmentation with a ViT of {vision['num_hidden_layers']} layers, "
        f"width {vision['hidden_size']}, "
        f"patch {vision['patch_size']}, input {vision['image_size']} px{_runs_at(cfg, vision)}; decoder reads layers "
        f"{model_cfg['extract_layers']} (reduce_dim {model_cfg['reduce_dim']}); a text encoder of "
        f"{model_cfg['text_config']['num_hidden_layers']} layers with a tokenizer built locally "
        f"(`engine/models/tokenizer.py`). {_parameters(run_dir / 'best') / 1e6:.1f} M parameters, {size_mb:.1f} MB "
        "(`best/`, safetensors, fp32).", "",
        "## Training", "",
        *_training(run_dir, cfg, summary),
        f"The model's default threshold is **{scores['threshold']:.2f}**. `config.json` and `metrics.jsonl` beside "
        "this card hold every setting and every epoch.", "",
        "## Data", "",
        *[f"- `{_relative(d['path'])}` (prompts: {', '.join(repr(p) for p in d['prompts'])}): "
          f"{ATTRIBUTION.get(Path(d['path']).name, 'see its source')}" for d in cfg["data"]],
        "", "Both sets are split by source photo (no photo in two splits). The train splits were used for training"
        f"{_held_out(cfg)}"
        f"{'' if _valid_unseen(cfg) else ', the valid splits for model selection and the scores below'}.",
        "",
        f"## Scores (validation splits, each prompt at its own threshold; default {scores['threshold']:.2f})", "",
        "| set | prompt | images | mIoU (per image) | Dice | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, prompts in scores["sets"].items():
        for prompt, r in prompts.items():
            lines.append(f"| {set_name} | {prompt} | {r['n_images']} | {r['miou']:.3f} | {r['dice']:.3f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} |")
    lines += _absent_table(scores)
    lines += ["", f"Reproduce the tables with `python -m engine evaluate --model {portable(run_dir)} --data "
              "../shared/data/drywall-qa/cracks/valid=\"segment crack\" --data "
              "../shared/data/drywall-qa/joints/valid=\"segment taping area\"` (each prompt at the threshold "
              "in `best/drywall_qa.json`).", "",
              _honesty(cfg), ""]
    return "\n".join(lines)


def _runs_at(cfg: dict, vision: dict) -> str:
    """", run at 288 px" when the run saved the model to run at another size than its architecture's."""
    size = cfg.get("inference_size") or cfg.get("image_size")
    return f", run at {size} px" if size and size != vision["image_size"] else ""


def _parameters(folder: Path) -> int:
    """The number of parameters in a model folder's safetensors weights (read from their headers)."""
    from safetensors import safe_open

    total = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def _preset_of(run_dir: Path) -> str | None:
    """The preset whose `out` is this run folder (the starter presets), else None."""
    from engine.train.config import PRESETS

    return next((name for name, p in PRESETS.items() if p.get("out") == portable(run_dir)), None)


def _stage(run_dir: Path, cfg: dict, summary: dict) -> str:
    """One run's recipe in a sentence or three: the command, epochs, optimiser, what trained, where, selection."""
    preset = _preset_of(run_dir)
    command = (f"`python -m engine train --preset {preset}` (see `PRESETS['{preset}']` in `engine/train/config.py`)"
               if preset else "`python -m engine train` with the settings in its `config.json`")
    losses = "BCE + soft Dice"
    if cfg.get("dice_on_empty") is False:
        losses += " (Dice on photos with a labelled mask only)"
    if cfg.get("bce_on_empty", 1.0) != 1.0:
        losses += f", the BCE weighted {cfg['bce_on_empty']:g} on absent-concept samples"
    if cfg.get("presence_weight"):
        only = ", negatives only" if cfg.get("presence_on_positives") is False else ""
        losses += f" + presence (weight {cfg['presence_weight']:g}{only})"
    if cfg.get("train") == "all":
        what = "flips / 90° turns / crops / colour jitter, every layer trained"
    else:
        what = (f"only the decoder trained, from cached features of the frozen backbone ({cfg.get('cache_views')} "
                f"views per photo, computed in {summary.get('cache_precision', 'fp32')})")
    walls = [(d["synthetic_walls"], d["synthetic_concept"], d.get("synthetic_mixed", 0)) for d in cfg.get("data", [])
             if d.get("synthetic_walls")]
    if walls:
        kinds = [f"{n} generated walls of {c}" + (f" ({m} of them with the other concept too)" if m else "")
                 for n, c, m in walls]
        what += ", with " + " and ".join(kinds) + \
            " (`engine/synth.py`, seeds unlike the example walls') added to the training photos"
    for d in cfg.get("data", []):
        if not d.get("pasted_lines"):
            continue
        own = Path(d["path"]).name
        if d.get("pasted_lines_from"):
            base, donor, label = own, Path(d["pasted_lines_from"]).name, f"`{own}`'s labels"
        else:
            base, donor, label = Path(d["pasted_lines_onto"]).name, own, f"the lines, for `{own}`"
        photos = "training photos and generated walls" if d.get("pasted_on_walls") else "training photos"
        what += (f", with {d['pasted_lines']} of `{base}`'s {photos} carrying the labelled lines of "
                 f"`{donor}`'s (`engine/paste.py`; labelled with {label}, never negatives)")
    if cfg.get("inference_size") and cfg["inference_size"] != cfg.get("image_size"):
        what += (f"; trained on {cfg['image_size']} px views, it runs at **{cfg['inference_size']} px** (its "
                 "preprocessor config; position embeddings interpolated), where it was also validated and calibrated")
    amp = " autocast" if summary["precision"] != "float32" else ""
    reason = summary.get("precision_reason", "")  # "bf16: a training step measured ..."
    measured = f", chosen because {reason.split(': ', 1)[-1]}" if reason else ""
    model = cfg.get("model")
    start = " from scratch" if model == "scratch" else f" from `{portable(in_repo(model))}`" if model else ""
    return (f"{command}: {summary['epochs_done']} epochs{start}, AdamW lr {cfg['lr']:g} (cosine, "
            f"{cfg['warmup_epochs']:g} warm-up epochs), weight decay {cfg['weight_decay']:g}, batch "
            f"{cfg['batch_size']}, {losses}, {what}; device {summary['device']}, precision {summary['precision']}"
            f"{amp}{measured}, {summary['total_seconds'] / 60:.0f} minutes. {_selection(cfg, summary)}")


def _training(run_dir: Path, cfg: dict, summary: dict) -> list[str]:
    """The Training section's paragraphs: this run's recipe, preceded by its base run's when it fine-tuned one."""
    base = in_repo(cfg["model"]) if cfg.get("model") not in (None, "scratch", "auto") else None
    if base is None or not (base / "summary.json").is_file():  # a model folder, not a training run
        return [_stage(run_dir, cfg, summary)]
    base_cfg = json.loads((base / "config.json").read_text())
    base_summary = json.loads((base / "summary.json").read_text())
    return ["Two stages.", "",
            f"1. {_stage(base, base_cfg, base_summary)}",
            f"2. {_stage(run_dir, cfg, summary)}", ""]


def _absent_table(scores: dict) -> list[str]:
    """Each prompt on the other sets' photos (absent concept): false alarms, area, presence AUROC; [] if none."""
    rows = [(set_name, p, r) for set_name, prompts in scores["sets"].items() for p, r in prompts.items()
            if r.get("absent")]
    if not rows:
        return []
    lines = ["", "Absent concepts: each prompt on the other sets' validation photos, where its concept is not "
             "labelled. A false alarm is a mask over 1% of the photo (an upper bound: such a photo may hold the "
             "concept unlabelled).", "",
             "| prompt | threshold | other sets' photos | false alarms | mean area | presence AUROC |",
             "|---|---|---|---|---|---|"]
    for _, p, r in rows:
        a, auc = r["absent"], r.get("presence_auroc")
        lines.append(f"| {p} | {r['threshold']:.2f} | {a['n_images']} | {a['false_alarm_rate']:.1%} | "
                     f"{a['mean_area']:.2%} | {'-' if auc is None else f'{auc:.3f}'} |")
    return lines


def _held_out(cfg: dict) -> str:
    share = cfg.get("holdout_share") or 0
    return f" (less {share:.0%} of each, held out for the thresholds)" if share else ""


def _valid_unseen(cfg: dict) -> bool:
    """True when the valid splits chose neither the epoch nor the threshold."""
    return cfg.get("select") == "last" and cfg.get("calibrate_on") in ("train", "holdout")


def _selection(cfg: dict, summary: dict) -> str:
    epoch = (f"The final epoch ({summary['best_epoch']}) is kept" if cfg.get("select") == "last"
             else f"Best epoch {summary['best_epoch']} by mean validation IoU")
    sources = {"train": f"the first {cfg.get('calibration_images')} train photos of each set",
               "holdout": f"{cfg.get('holdout_share', 0):.0%} of each set's train photos, held out of training (the "
                          "same photos in every run with this share)"}
    if cfg.get("holdout_min_photos"):
        sources["holdout"] += (f", or, for a set with fewer than {cfg['holdout_min_photos']} photos held out, on its "
                               f"first {cfg.get('calibration_images')} train photos, its presence threshold low "
                               f"enough to find {MIN_FOUND:.0%} of its held-out photos with the concept")
    source = sources.get(cfg.get("calibrate_on"), "the validation sets")
    when = f"From {cfg['negative_start']:.0%} of the run on" if cfg.get("negative_start") else "Throughout"
    negatives = (f" {when}, {cfg['negative_rate']:.0%} of the samples "
                 "were absent-concept negatives (a photo with another set's prompt and an empty mask)."
                 if cfg.get("negative_rate") and len(cfg.get("data", [])) > 1 else "")
    if negatives and cfg.get("hard_negatives"):
        negatives += (f" Hard negatives (strength {cfg['hard_negatives']:g}): a photo was drawn as a negative in "
                      "proportion to how much of it the starting model marked for the other set's prompt.")
    return (f"{epoch}; each prompt's pixel and presence thresholds were calibrated on {source} (`python -m engine "
            "calibrate`: the other sets' photos count as absent concepts, and at least "
            f"{MIN_FOUND:.0%} of a prompt's own "
            f"labelled photos stay found).{negatives}")


def _honesty(cfg: dict) -> str:
    if _valid_unseen(cfg):
        return ("The validation photos were never trained on and chose nothing (neither the epoch nor the threshold): "
                "these are scores on photos the model has not seen. `metrics.jsonl` logs them per epoch for the "
                "curves; nothing was picked from them.")
    return ("No validation photo was trained on, but the validation splits chose the epoch and the threshold, so "
            "these scores are slightly optimistic.")


def write_card(run_dir, threads: int | None = None) -> Path:
    """Evaluate the run's best model and write README.md (the card) and scores.json beside it."""
    scores = evaluate_run(run_dir, threads)
    atomic_write_json(Path(run_dir) / "scores.json", scores)
    return atomic_write_text(Path(run_dir) / "README.md", render_card(run_dir, scores))


# -- the card of any run, for its download and its Hub repo -----------------------------------------------------

LICENSE = "apache-2.0"  # CLIPSeg's; the shared data sets are CC BY 4.0 (named in the card's Data section)
OWN_SET = "the user's own labelled set"
CARD_METRICS = ("miou", "dice", "precision", "recall")  # per prompt, as training's validation logs them


def run_scores(run_dir) -> dict[str, dict[str, dict]]:
    """{set name: {prompt: {miou, dice, precision, recall, ...}}} of a run's best model, without running it:
    scores.json (`write_card`'s evaluation) when present, else the best epoch's validation row (summary.json)."""
    run_dir = Path(run_dir)
    if (run_dir / "scores.json").is_file():
        return json.loads((run_dir / "scores.json").read_text())["sets"]
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    val = (summary.get("best") or {}).get("val") or {}
    sets = {}
    for spec in cfg.get("data") or []:
        if spec.get("val_split") == "none":
            continue
        name = f"{Path(spec['path']).name}/{spec.get('val_split') or 'valid'}"
        sets[name] = {p: val[p] for p in spec["prompts"] if p in val}
    return sets


def _base_model(cfg: dict, summary: dict | None = None) -> str | None:
    """The Hub id a run really started from, or None (from scratch, or from a local folder).

    `auto` is whatever it resolved to when the run started (summary.json's `source_model`: the Hub model when it
    was reachable, the bundled model's folder offline), never assumed to be the Hub model.
    """
    model = str(cfg.get("model") or "")
    if model == "auto":  # the Hub model, or (offline) the bundled model's folder
        return DEFAULT_HUB_ID if (summary or {}).get("source_model") == DEFAULT_HUB_ID else None
    parts = model.split("/")
    return model if len(parts) == 2 and all(parts) and not model.startswith((".", "/", "~")) else None


def _started_from(cfg: dict, summary: dict) -> str:
    """What a run started from, in words: a Hub id, "a new model (from scratch)" or "a local model (NAME)"."""
    base = _base_model(cfg, summary)
    if base:
        return base
    if cfg.get("model") == "scratch":
        return "a new model (from scratch)"
    source = str(summary.get("source_model") or "") if cfg.get("model") == "auto" else ""
    name = source.split("/")[0] if source else Path(str(cfg.get("model"))).name
    return f"a local model ({name})"


def card_metadata(run_dir, name: str | None = None) -> dict:
    """The card's YAML front matter: library, pipeline tag, license, base model, data sets, and `model-index`
    with one result per (set, prompt) holding its validation metrics (the Hub shows them on the model page)."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    name = name or run_dir.name
    results = []
    for set_name, prompts in run_scores(run_dir).items():
        for prompt, row in prompts.items():
            metrics = [{"type": m, "name": f"{prompt}: {m}", "value": round(float(row[m]), 4)}
                       for m in CARD_METRICS if row.get(m) is not None]
            results.append({"task": {"type": "image-segmentation", "name": f"Segmentation: {prompt}"},
                            "dataset": {"name": set_name, "type": set_name.split("/")[0],
                                        "split": set_name.split("/")[-1]},
                            "metrics": metrics})
    meta = {"library_name": "transformers", "pipeline_tag": "image-segmentation", "license": LICENSE,
            "tags": ["clipseg", "drywall-qa", "text-prompted-segmentation"],
            "datasets": sorted({f"drywall-qa/{Path(d['path']).name}" for d in cfg.get("data") or []})}
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    base = _base_model(cfg, summary)
    if base:
        meta["base_model"] = base
    meta["model-index"] = [{"name": name, "results": results}]
    return meta


def run_card(run_dir, name: str | None = None) -> str:
    """README.md of a run's Hugging Face folder: YAML front matter (`card_metadata`), then the metrics, the
    data and the training settings. It names no server path (a data set by its folder name), so a public
    app may hand it out."""
    run_dir = Path(run_dir)
    name = name or run_dir.name
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    meta = card_metadata(run_dir, name)
    start = _started_from(cfg, summary)
    settings = {k: cfg[k] for k in ("epochs", "lr", "batch_size", "image_size", "train", "unfreeze_vision_layers",
                                    "unfreeze_text_layers", "augment", "negative_rate", "select", "calibrate_on",
                                    "holdout_share", "inference_size")
                if k in cfg}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "",
             f"CLIPSeg (`CLIPSegForImageSegmentation`) fine-tuned with Drywall QA from {start}. Load it with "
             "`CLIPSegForImageSegmentation.from_pretrained(folder)`, or unzip it into the app's `checkpoints/` "
             "and pick it in any model list; `drywall_qa.json` holds its calibrated per-prompt thresholds.", "",
             f"## Scores (validation, best epoch {summary.get('best_epoch', '?')})", "",
             "| set | prompt | photos | mIoU | Dice | precision | recall |", "|---|---|---|---|---|---|---|"]
    for set_name, prompts in run_scores(run_dir).items():
        for prompt, r in prompts.items():
            lines.append(f"| {set_name} | {prompt} | {r.get('n', '?')} | "
                         + " | ".join(f"{float(r.get(m, float('nan'))):.3f}" for m in CARD_METRICS) + " |")
    lines += ["", "## Data", ""]
    lines += [f"- `{Path(d['path']).name}` (prompts: {', '.join(repr(p) for p in d['prompts'])}): "
              f"{ATTRIBUTION.get(Path(d['path']).name, OWN_SET)}" for d in cfg.get("data") or []]
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    lines += [f"| epochs done | {summary.get('epochs_done', '?')} |", "",
              "`training_config.json` holds every setting and `metrics.jsonl` every epoch's losses and validation "
              "scores.", ""]
    return "\n".join(lines)
