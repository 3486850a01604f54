"""A model card (README.md) for a training run: how it was trained, on what, and its scores.

The scores come from `engine.evaluate.evaluate` at the model's own threshold on each set's validation split,
so `python -m engine evaluate --model RUN --data SET/valid --prompt PROMPT` reproduces them.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.data import open_dataset
from engine.evaluate import evaluate
from engine.fileio import atomic_write_json, atomic_write_text
from engine.models import load_segmenter
from engine.paths import REPO_ROOT

ATTRIBUTION = {
    "cracks": '"cracks-3ii36" by 10xConstruction (Roboflow Universe; re-export vaibhav-tiwari/cracks-3ii36-ggtdw), '
              "CC BY 4.0",
    "joints": '"drywall-join-detect" by objectdetect-pu6rn (Roboflow Universe; re-export '
              "vaibhav-tiwari/drywall-join-detect-bbaep), CC BY 4.0",
}


def evaluate_run(run_dir, threads: int | None = None) -> dict:
    """{set name: {prompt: PromptReport.to_dict() row}} on each training set's validation split."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    segmenter = load_segmenter(run_dir, threads=threads, precision="fp32")
    results = {}
    for spec in cfg["data"]:
        root = Path(spec["path"])
        split = spec.get("val_split") or "valid"
        dataset = open_dataset(root / split if (root / split).is_dir() else root, prompts=tuple(spec["prompts"]))
        report = evaluate(segmenter, dataset, list(spec["prompts"]), progress=False)
        results[f"{root.name}/{split}"] = report.to_dict()["prompts"]
    return {"threshold": segmenter.threshold, "sets": results}


def _relative(path: str) -> str:
    p = Path(path).resolve()
    shared = REPO_ROOT.parent / "shared"
    return f"../shared/{p.relative_to(shared)}" if p.is_relative_to(shared) else str(path)


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
        "**Fine-tuned pretrained CLIPSeg is far stronger**: others report 0.45-0.56 crack IoU and 0.52-0.66 taping "
        "IoU for it. Use `auto` (the default) wherever the Hugging Face Hub is reachable. It learned only the "
        "prompts listed under Data (synonyms within a set give the same mask); other text gives meaningless masks.", "",
        "## Architecture", "",
        f"CLIPSegForImageSegmentation with a ViT of {vision['num_hidden_layers']} layers, width {vision['hidden_size']}, "
        f"patch {vision['patch_size']}, input {vision['image_size']} px; decoder reads layers "
        f"{model_cfg['extract_layers']} (reduce_dim {model_cfg['reduce_dim']}); a text encoder of "
        f"{model_cfg['text_config']['num_hidden_layers']} layers with a tokenizer built locally "
        f"(`engine/models/tokenizer.py`). {summary['trained_parameters'] / 1e6:.1f} M parameters, {size_mb:.1f} MB "
        "(`best/`, safetensors, fp32).", "",
        "## Training", "",
        f"`python -m engine train --preset starter` (see `PRESETS['starter']` in `engine/train/config.py`): "
        f"{summary['epochs_done']} epochs, AdamW lr {cfg['lr']:g} (cosine, {cfg['warmup_epochs']:g} warm-up epochs), "
        f"weight decay {cfg['weight_decay']:g}, batch {cfg['batch_size']}, BCE + soft Dice, flips / 90° turns / "
        f"crops / colour jitter, every layer trained; device {summary['device']}, precision {summary['precision']} "
        f"autocast, {summary['total_seconds'] / 60:.0f} minutes. {_selection(cfg, summary)} The model's default "
        f"threshold is **{scores['threshold']:.2f}**. `config.json` and `metrics.jsonl` beside this card hold every "
        "setting and every epoch.", "",
        "## Data", "",
        *[f"- `{_relative(d['path'])}` (prompts: {', '.join(repr(p) for p in d['prompts'])}): "
          f"{ATTRIBUTION.get(Path(d['path']).name, 'see its source')}" for d in cfg["data"]],
        "", "Both sets are split by source photo (no photo in two splits). The train splits were used for training"
        f"{'' if _valid_unseen(cfg) else ', the valid splits for model selection and the scores below'}.", "",
        f"## Scores (validation splits, threshold {scores['threshold']:.2f})", "",
        "| set | prompt | images | mIoU (per image) | Dice | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, prompts in scores["sets"].items():
        for prompt, r in prompts.items():
            lines.append(f"| {set_name} | {prompt} | {r['n_images']} | {r['miou']:.3f} | {r['dice']:.3f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} |")
    lines += ["", "Reproduce a row with `python -m engine evaluate --model checkpoints/drywall-starter --data "
              "../shared/data/drywall-qa/cracks/valid --prompt \"segment crack\"`.", "",
              _honesty(cfg), ""]
    return "\n".join(lines)


def _valid_unseen(cfg: dict) -> bool:
    """True when the valid splits chose neither the epoch nor the threshold."""
    return cfg.get("select") == "last" and cfg.get("calibrate_on") == "train"


def _selection(cfg: dict, summary: dict) -> str:
    epoch = (f"The final epoch ({summary['best_epoch']}) is kept" if cfg.get("select") == "last"
             else f"Best epoch {summary['best_epoch']} by mean validation IoU")
    source = (f"the first {cfg.get('calibration_images')} train photos of each set" if cfg.get("calibrate_on") == "train"
              else "the validation sets")
    return f"{epoch}; the threshold was calibrated on {source}."


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
