"""`python -m engine train` (engine/cli.py cmd_train): a run from the command line, with --set threads."""

import json

import pytest
import torch


@pytest.mark.slow
def test_cli_train(tiny_model_dir, shared_data, tmp_path):
    from engine.cli import main

    threads = torch.get_num_threads()
    try:
        code = main(["train", "--preset", "tiny", "--model", str(tiny_model_dir), "--out", str(tmp_path / "cli"),
                     "--data", f"{shared_data / 'cracks'}=segment crack,segment wall crack", "--epochs", "1",
                     "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "threads=1"])
        assert torch.get_num_threads() == 1  # the entry point applied cfg.threads
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["epochs_done"] == 1
    assert (tmp_path / "cli" / "README.md").is_file()  # the model card


def test_cli_train_names_an_unknown_setting(capsys):
    from engine.cli import main

    assert main(["train", "--set", "learning_rate=1"]) == 1
    assert "unknown setting 'learning_rate'" in capsys.readouterr().err


def test_cli_train_takes_a_named_setting_with_set_but_not_twice(capsys, monkeypatch):
    import engine.train.config as config
    from engine.cli import main

    seen = []
    monkeypatch.setattr("engine.cli.make_config", lambda preset, **kw: seen.append(kw) or config.make_config(
        preset, **{**kw, "epochs": 0}))  # epochs 0 is refused: the run stops right after the settings are read
    assert main(["train", "--set", "lr=2e-4"]) == 1
    assert seen[-1]["lr"] == 2e-4
    assert main(["train", "--lr", "1e-3", "--set", "lr=2e-4"]) == 1
    assert "lr given both as an option and with --set; give each once." in capsys.readouterr().err


def test_cli_train_starter_says_to_train_its_base_first(capsys, monkeypatch, tmp_path):
    from engine.cli import main

    monkeypatch.setattr("engine.cli.in_repo", lambda path: tmp_path / "missing")  # as in a checkout without it
    assert main(["train", "--preset", "starter"]) == 1
    err = capsys.readouterr().err
    assert "fine-tunes checkpoints/drywall-starter-base, which is missing" in err
    assert "python -m engine train --preset starter-base" in err


@pytest.mark.slow
def test_cli_teach_trains_on_a_label_set_replaying_the_shared_sets(tiny_model_dir, shared_data, tmp_path):
    """`--preset teach --data SET`: the set under its own prompt, the shared sets replayed (never validated)."""
    from engine.cli import main
    from engine.data.labelset import save_label
    from engine.synth import make_wall

    for seed in (1, 2, 3):
        image, masks = make_wall(seed, (64, 64), cracks=0, joints=0, stains=1)
        image.save(tmp_path / f"w{seed}.png")
        save_label(tmp_path / "sets", "stains", tmp_path / f"w{seed}.png", "segment water stain",
                   masks["water stain"])
    code = main(["train", "--preset", "teach", "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
                 "--data", str(tmp_path / "sets" / "stains"), "--epochs", "1", "--set", "feature_cache=false",
                 "--set", "threads=1", "--set", "warmup_epochs=0"])
    assert code == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [(d["prompts"], d["val_split"]) for d in cfg["data"]] == [
        (["segment water stain"], "train"), (["segment crack", "segment wall crack"], "none"),
        (["segment taping area", "segment joint/tape", "segment drywall seam"], "none")]
    assert cfg["replay_targets"] == "teacher" and cfg["image_size"] == 64
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["finished"] and "segment water stain" in summary["best"]["val"]
    assert any("scores are on its training photos" in line for line in summary["log"])


def test_cli_teach_refuses_prompts_or_no_set(capsys):
    from engine.cli import main

    assert main(["train", "--preset", "teach", "--data", "x=segment crack"]) == 1
    assert "label sets made in the app" in capsys.readouterr().err
