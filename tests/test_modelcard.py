"""engine/modelcard.py: the card rendered from a run folder's config, summary and scores."""

import json

import torch
from safetensors.torch import save_file

from engine.modelcard import render_card

SCORES = {"threshold": 0.35, "sets": {"cracks/valid": {"segment crack": {
    "n_images": 12, "miou": 0.4567, "dice": 0.55, "precision": 0.6, "recall": 0.7}}}}


def _run(tmp_path, name="drywall-test", **cfg_overrides):
    run = tmp_path / name
    (run / "best").mkdir(parents=True)
    cfg = {"lr": 1e-3, "warmup_epochs": 2, "weight_decay": 0.05, "batch_size": 16, "select": "last",
           "calibrate_on": "train", "calibration_images": 100,
           "data": [{"path": "/elsewhere/cracks", "prompts": ["segment crack", "segment wall crack"]}],
           **cfg_overrides}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "summary.json").write_text(json.dumps({"trained_parameters": 2_500_000, "epochs_done": 80,
                                                  "device": "cpu", "precision": "bfloat16", "total_seconds": 600,
                                                  "best_epoch": 80}))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "best" / "config.json").write_text(json.dumps({
        "vision_config": {"num_hidden_layers": 6, "hidden_size": 192, "patch_size": 16, "image_size": 224},
        "text_config": {"num_hidden_layers": 2}, "extract_layers": [1, 3, 5], "reduce_dim": 64}))
    save_file({"w": torch.zeros(2_500_000, dtype=torch.int8)}, str(run / "best" / "model.safetensors"))
    return run


def test_card_holds_the_run_the_settings_and_the_scores(tmp_path):
    card = render_card(_run(tmp_path), SCORES)
    assert card.startswith("# drywall-test\n")
    assert "ViT of 6 layers, width 192, patch 16, input 224 px" in card
    assert "2.5 M parameters, 2.5 MB" in card  # counted from the weights, not from what trained
    assert "80 epochs, AdamW lr 0.001 (cosine, 2 warm-up epochs)" in card
    assert "10 minutes" in card and "threshold is **0.35**" in card
    assert ("The final epoch (80) is kept; each prompt's pixel and presence thresholds were calibrated on the "
            "first 100 train photos") in card
    assert "- `/elsewhere/cracks` (prompts: 'segment crack', 'segment wall crack'): \"cracks-3ii36\"" in card
    assert "| cracks/valid | segment crack | 12 | 0.457 | 0.550 | 0.600 | 0.700 |" in card
    assert "chose nothing (neither the epoch nor the threshold)" in card


def test_card_says_when_the_valid_split_chose_the_epoch(tmp_path):
    card = render_card(_run(tmp_path, select="best", calibrate_on="valid"), SCORES)
    assert ("Best epoch 80 by mean validation IoU; each prompt's pixel and presence thresholds were calibrated on "
            "the validation sets") in card
    assert "these scores are slightly optimistic" in card
    assert ", the valid splits for model selection and the scores below" in card


def test_card_of_a_fine_tuned_run_describes_both_stages(tmp_path):
    base = _run(tmp_path, name="base", model="scratch", train="all")
    run = _run(tmp_path, model=str(base), train="decoder", cache_views=2, presence_weight=1.0, negative_rate=0.5,
               data=[{"path": "/x/cracks", "prompts": ["segment crack"], "synthetic_concept": "crack",
                      "synthetic_walls": 40}, {"path": "/x/joints", "prompts": ["t"]}])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "precision": "float32", "cache_precision": "bf16"}))
    card = render_card(run, SCORES)
    assert ("Two stages.\n\n1. `python -m engine train` with the settings in its `config.json`: 80 epochs from "
            "scratch") in card
    assert "every layer trained; device cpu, precision bfloat16 autocast" in card
    assert f"2. `python -m engine train` with the settings in its `config.json`: 80 epochs from `{base}`" in card
    assert ("BCE + soft Dice + presence (weight 1), only the decoder trained, from cached features of the frozen "
            "backbone (2 views per photo, computed in bf16), with 40 generated walls of crack (`engine/synth.py`, "
            "seeds unlike the example walls') added to the training photos; device cpu, precision float32, "
            "10 minutes") in card
    assert "Throughout, 50% of the samples were absent-concept negatives" in card


def test_card_says_how_the_bce_of_negatives_was_weighted(tmp_path):
    card = render_card(_run(tmp_path, presence_weight=0.3, bce_on_empty=0.3), SCORES)
    assert "BCE + soft Dice, the BCE weighted 0.3 on absent-concept samples + presence (weight 0.3)" in card
    assert "weighted" not in render_card(_run(tmp_path / "plain", presence_weight=0.3), SCORES)


def test_card_of_a_run_calibrated_on_held_out_photos(tmp_path):
    run = _run(tmp_path, calibrate_on="holdout", holdout_share=0.1, presence_weight=0.3, dice_on_empty=False,
               data=[{"path": "/x/cracks", "prompts": ["segment crack"], "synthetic_concept": "crack",
                      "synthetic_walls": 40, "synthetic_mixed": 20}])
    card = render_card(run, SCORES)
    assert ("thresholds were calibrated on 10% of each set's train photos, held out of training (the same photos "
            "in every run with this share)") in card
    assert "chose nothing (neither the epoch nor the threshold)" in card
    assert "The train splits were used for training (less 10% of each, held out for the thresholds)." in card
    assert ("BCE + soft Dice (Dice on photos with a labelled mask only) + presence (weight 0.3), only the "
            "decoder") in card
    assert "with 40 generated walls of crack (20 of them with the other concept too)" in card
    assert "carrying the labelled lines" not in card


def test_card_names_the_composites_a_set_was_given(tmp_path):
    run = _run(tmp_path, data=[{"path": "/x/cracks", "prompts": ["segment crack"], "pasted_lines": 50,
                                "pasted_lines_onto": "/x/joints"},
                               {"path": "/x/joints", "prompts": ["segment taping area"], "pasted_lines": 100,
                                "pasted_lines_from": "/x/cracks", "pasted_on_walls": True}])
    card = render_card(run, SCORES)
    assert ("with 50 of `joints`'s training photos carrying the labelled lines of `cracks`'s (`engine/paste.py`; "
            "labelled with the lines, for `cracks`, never negatives), with 100 of `joints`'s training photos and "
            "generated walls carrying the labelled lines of `cracks`'s (`engine/paste.py`; labelled with `joints`'s "
            "labels, never negatives)") in card


def test_card_says_why_the_run_trained_in_its_precision(tmp_path):
    run = _run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    reason = "bf16: a training step measured 0.23 s in fp32 and 0.09 s in bf16 here (2.46x)"
    (run / "summary.json").write_text(json.dumps({**summary, "precision": "bfloat16", "precision_reason": reason}))
    card = render_card(run, SCORES)
    assert ("precision bfloat16 autocast, chosen because a training step measured 0.23 s in fp32 and 0.09 s in "
            "bf16 here (2.46x), 10 minutes") in card
