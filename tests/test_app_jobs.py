"""engine/app/jobs.py: the Train tab's choices as data specs and TrainConfig fields (no job is started here)."""

import pytest

from engine.app.jobs import TrainRequest, new_run_dir, train_defaults, training_data, training_settings

SETTINGS = dict(model="m", epochs=2, lr=1e-3, batch_size=2, image_size=64)


def test_new_run_dir_names(tmp_path):
    assert new_run_dir(tmp_path, "my-run") == tmp_path / "my-run"
    assert new_run_dir(tmp_path, "").name.startswith("run-")
    with pytest.raises(ValueError, match="letters, digits"):
        new_run_dir(tmp_path, "../escape")


def test_training_data_takes_shared_sets_then_zip_then_folder(tmp_path):
    request = TrainRequest(**SETTINGS, sets=["cracks", "joints"], set_prompts={"cracks": "segment crack", "joints": ""},
                           zip_file="/up/set.zip", zip_prompts="segment seam", folder="  /data/walls ",
                           folder_prompts="segment wall crack")
    assert training_data(request, tmp_path) == [
        (str(tmp_path / "cracks"), "segment crack"),
        (str(tmp_path / "joints"), ("segment taping area", "segment joint/tape", "segment drywall seam")),
        ("/up/set.zip", "segment seam"), ("/data/walls", "segment wall crack")]
    assert training_data(TrainRequest(**SETTINGS, folder="  "), tmp_path) == []


def test_training_settings_limit_validation_and_pick_last_n():
    settings = training_settings(TrainRequest(**SETTINGS, max_images=6.0, unfreeze_vision_layers=2))
    assert settings["max_train_images"] == 6 and settings["max_val_images"] == 2 and settings["train"] == "last_n"
    assert training_settings(TrainRequest(**SETTINGS, max_images=40))["max_val_images"] == 10
    plain = training_settings(TrainRequest(**SETTINGS, max_images=0))
    assert plain["max_train_images"] is None and plain["max_val_images"] is None and "train" not in plain
    assert training_settings(TrainRequest(**SETTINGS, unfreeze_text_layers=1),
                             {"train": "all", "feature_cache": False})["train"] == "all"


def test_train_defaults_are_trainconfigs():
    from engine.train import make_config

    assert train_defaults() == make_config()
