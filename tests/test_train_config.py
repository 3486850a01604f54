"""engine/train/config.py: presets are small overrides, bad settings are named, config.json reads back."""

import dataclasses
import json

import pytest

from engine.paths import DEFAULT_SETS, REPO_ROOT, SHARED_DATA
from engine.train.config import PRESETS, DataSpec, TrainConfig, config_from_json, default_data, make_config, run_folder


def test_presets_are_small_overrides_and_bad_settings_are_named():
    assert all(len(p) <= 20 for p in PRESETS.values())  # overrides, not copies of the ~45 fields
    cfg = make_config("quick", lr=5e-4)
    assert cfg.epochs == PRESETS["quick"]["epochs"] and cfg.lr == 5e-4 and cfg.batch_size == TrainConfig.batch_size
    with pytest.raises(ValueError, match="Unknown preset"):
        make_config("nope")
    with pytest.raises(ValueError, match="Unknown training setting"):
        make_config(None, learning_rate=1)


@pytest.mark.parametrize("name, bad, message", [
    ("train", "everything", "train must be 'decoder', 'last_n' or 'all', not 'everything'"),
    ("select", "worst", "select must be 'best' or 'last'"),
    ("calibrate_on", "test", "calibrate_on must be 'valid', 'train' or 'holdout'"),
    ("schedule", "step", "schedule must be 'cosine' or 'plateau'"),
    ("cache_precision", "fp16", "cache_precision must be 'auto', 'fp32' or 'bf16'"),
    ("epochs", 0, "epochs, batch_size and calibrate_every must be >= 1"),
    ("calibrate_every", 0, "calibrate_every must be >= 1"),
    ("replay_targets", "guess", "replay_targets must be"),
    ("lr", -1.0, "lr > 0"),
    ("bce_on_empty", -0.5, "bce_on_empty is a weight >= 0"),
])
def test_settings_outside_their_values_are_refused(name, bad, message):
    with pytest.raises(ValueError, match=message):
        make_config(None, **{name: bad})


def test_none_overrides_keep_the_preset_value():
    assert make_config("tiny", epochs=None).epochs == PRESETS["tiny"]["epochs"]


def test_default_data_is_the_shared_sets_with_their_prompts():
    data = default_data()
    assert [(d.path, d.prompts) for d in data] == [(str(SHARED_DATA / n), p) for n, p in DEFAULT_SETS.items()]
    assert make_config().data == data


def test_config_json_reads_back(tmp_path):
    cfg = make_config("starter", data=[DataSpec("/x/cracks", ("segment crack",), "train", None)])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    again = config_from_json(path)
    assert again == cfg and again.data[0].prompts == ("segment crack",) and again.data[0].val_split is None


def test_run_folder_is_relative_to_the_repo(tmp_path):
    assert run_folder(make_config(None, out="checkpoints/x")) == REPO_ROOT / "checkpoints" / "x"
    assert run_folder(make_config(None, out=str(tmp_path))) == tmp_path


def test_saved_config_stores_data_roots_relative_to_the_repo(tmp_path, shared_data):
    import json

    from engine.train import config_from_json, make_config
    from engine.train.checkpoint import start_run_folder

    cfg = make_config("quick", out=str(tmp_path / "run"))
    start_run_folder(tmp_path / "run", cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [d["path"] for d in saved["data"]] == ["../shared/data/drywall-qa/cracks",
                                                 "../shared/data/drywall-qa/joints"]
    assert [d.path for d in config_from_json(tmp_path / "run" / "config.json").data] == [d.path for d in cfg.data]


def test_the_cache_quality_script_names_real_settings():
    """tools/cache_quality.sh passes --set KEY=VALUE lines to `engine train`: every key must be a setting."""
    import re
    import subprocess

    script = REPO_ROOT / "tools" / "cache_quality.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    keys = set(re.findall(r"--set ([a-z_]+)=", text))
    keys |= {k for line in re.findall(r"^run \S+ \d+ (.*)$", text, re.M) for k in re.findall(r"([a-z_]+)=", line)}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"cache_precision", "cache_views", "cache_grid_augment", "train", "select"} <= keys <= fields
