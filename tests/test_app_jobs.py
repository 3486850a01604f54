"""engine/app/jobs.py: the Train tab's choices as data specs and TrainConfig fields (no job is started here)."""

import pytest

from engine.app.jobs import TrainRequest, new_run_dir, train_defaults, training_data, training_settings
from engine.paths import STARTER_DIR

SETTINGS = dict(model="m", epochs=2, lr=1e-3, batch_size=2, image_size=64)


def test_new_run_dir_names(tmp_path):
    assert new_run_dir(tmp_path, "my-run") == tmp_path / "my-run"
    assert new_run_dir(tmp_path, "").name.startswith("run-")
    with pytest.raises(ValueError, match="letters, digits"):
        new_run_dir(tmp_path, "../escape")


def test_new_run_dir_never_names_an_existing_folder_or_the_bundled_model(tmp_path):
    (tmp_path / "done").mkdir()
    with pytest.raises(ValueError, match="A run named 'done' already exists and runs are never overwritten"):
        new_run_dir(tmp_path, "done")
    with pytest.raises(ValueError, match="'drywall-starter' is the bundled model and read-only"):
        new_run_dir(tmp_path, "drywall-starter")  # refused in any checkpoints folder
    with pytest.raises(ValueError, match="is the bundled model and read-only"):
        new_run_dir(STARTER_DIR.parent, STARTER_DIR.name)


def test_training_data_refuses_unknown_shared_sets(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown shared set\(s\) \['../etc'\]; choose from cracks, joints"):
        training_data(TrainRequest(**SETTINGS, sets=["cracks", "../etc"]), tmp_path)


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


def test_the_train_tab_negative_rate_reaches_the_config():
    from engine.app.jobs import TrainRequest, training_settings

    request = TrainRequest(model="auto", epochs=2, lr=1e-3, batch_size=4, image_size=64, negative_rate=0.4)
    assert training_settings(request)["negative_rate"] == 0.4
    assert "negative_rate" not in training_settings(TrainRequest(model="auto", epochs=2, lr=1e-3, batch_size=4,
                                                                 image_size=64))
