"""engine/modelcard.py: the card rendered from a run folder's config, summary and scores."""

import json

from engine.modelcard import render_card

SCORES = {"threshold": 0.35, "sets": {"cracks/valid": {"segment crack": {
    "n_images": 12, "miou": 0.4567, "dice": 0.55, "precision": 0.6, "recall": 0.7}}}}


def _run(tmp_path, **cfg_overrides):
    run = tmp_path / "drywall-test"
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
    (run / "best" / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    return run


def test_card_holds_the_run_the_settings_and_the_scores(tmp_path):
    card = render_card(_run(tmp_path), SCORES)
    assert card.startswith("# drywall-test\n")
    assert "ViT of 6 layers, width 192, patch 16, input 224 px" in card
    assert "2.5 M parameters, 2.0 MB" in card
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
