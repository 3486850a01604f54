"""The bundled offline model: small, loadable, the `auto` fallback offline, and its model card's numbers true."""

import json

import pytest

from engine.data import open_dataset
from engine.evaluate import evaluate
from engine.models import STARTER_DIR, load_segmenter, resolve_source

SETS = {"cracks/valid": "segment crack", "joints/valid": "segment taping area"}


@pytest.fixture(scope="module")
def starter():
    return load_segmenter(STARTER_DIR, threads=2, precision="fp32")


def test_bundled_model_is_small_and_complete():
    files = [p for p in STARTER_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30e6
    assert {"README.md", "config.json", "metrics.jsonl", "summary.json", "scores.json"} <= {p.name for p in files}
    assert (STARTER_DIR / "best" / "model.safetensors").is_file()
    assert not (STARTER_DIR / "last").exists()  # optimizer state is not shipped
    base = STARTER_DIR.parent / "drywall-starter-base"  # stage 1, what `--preset starter` fine-tunes
    assert (base / "best" / "model.safetensors").is_file() and not (base / "last").exists()


def test_auto_falls_back_to_the_bundled_model_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("auto").path == (STARTER_DIR / "best").resolve()


@pytest.mark.parametrize("split", SETS)
def test_model_card_numbers_are_reproduced(starter, shared_data, split):
    prompt = SETS[split]
    scores = json.loads((STARTER_DIR / "scores.json").read_text())
    card = (STARTER_DIR / "README.md").read_text()
    report = evaluate(starter, open_dataset(shared_data / split), [prompt], progress=False).prompts[prompt]
    expected = scores["sets"][split][prompt]
    assert report.n_images == expected["n_images"]
    assert report.miou == pytest.approx(expected["miou"], abs=1e-6)
    assert report.dice == pytest.approx(expected["dice"], abs=1e-6)
    assert f"| {split} | {prompt} | {report.n_images} | {report.miou:.3f} | {report.dice:.3f} |" in card


@pytest.mark.parametrize("folder, preset_name", [("drywall-starter", "starter"),
                                                 ("drywall-starter-base", "starter-base")])
def test_the_starter_presets_are_what_trained_the_bundled_models(folder, preset_name):
    """`python -m engine train --preset starter-base`, then `--preset starter`, reproduce the two shipped runs."""
    import dataclasses

    from engine.train import make_config

    shipped = json.loads((STARTER_DIR.parent / folder / "config.json").read_text())
    preset = json.loads(json.dumps(dataclasses.asdict(make_config(preset_name))))
    for cfg in (shipped, preset):  # data roots are absolute paths; compare the set names and prompts
        cfg["data"] = [(d["path"].rstrip("/").rsplit("/", 1)[-1], d["prompts"], d.get("synthetic_concept", ""),
                        d.get("synthetic_walls", 0), d.get("synthetic_mixed", 0)) for d in cfg["data"]]
        cfg.pop("out")  # where it was written (a scratch folder, then moved here), not how it was trained
    # Settings added since the base was trained: at values that change nothing for it.
    added = set(preset) - set(shipped)
    assert added <= {"cache_precision", "cache_grid_augment", "presence_weight", "negative_rate", "negative_start",
                     "dice_on_empty", "presence_on_positives", "holdout_share", "inference_size",
                     "calibrate_every", "replay_thresholds", "replay_targets", "hard_negatives", "holdout_min_photos",
                     "bce_on_empty"}
    for key, same in {"calibrate_every": 1, "replay_thresholds": "calibrate", "replay_targets": "labels",
                      "bce_on_empty": 1.0}.items():
        if key in added:  # what every run did before these settings existed
            assert preset.pop(key) == same, key
    negatives = preset.get("negative_rate", 0.0)
    for key, none in {"presence_weight": 0.0, "negative_rate": 0.0, "holdout_share": 0.0, "inference_size": 0,
                      "hard_negatives": 0.0, "holdout_min_photos": 0}.items():
        if key in added:
            assert preset.pop(key) == none, key
    for key in added & {"negative_start", "dice_on_empty", "presence_on_positives"}:  # act on negatives only
        assert negatives == 0.0, key
        preset.pop(key)
    if preset["amp_dtype"] == "auto" and shipped["amp_dtype"] != "auto":
        # a preset that now measures its precision (engine.train.precision); the run says what it trained in
        summary = json.loads((STARTER_DIR.parent / folder / "summary.json").read_text())
        assert summary["precision"] in ("float32", "bfloat16")
        preset.pop("amp_dtype"), shipped.pop("amp_dtype")
    if not shipped["feature_cache"]:  # trained without the feature cache: its settings played no part
        for cfg in (shipped, preset):
            for key in [k for k in cfg if k.startswith("cache_")]:
                cfg.pop(key)
    assert shipped == preset


def test_example_walls_find_what_they_hold_and_nothing_else(starter):
    """The first thing a newcomer clicks: each example wall finds what it holds and nothing else, but for the two
    answers the bundled model still gets wrong: the taping beside the cracks of the mixed walls 03 and 04 is not
    found (it never trained on a photo holding both)."""
    from engine.paths import EXAMPLES_DIR

    holds = json.loads((EXAMPLES_DIR / "prompts.json").read_text())
    prompts = ["segment crack", "segment taping area"]
    wrong = set()
    for name, present in holds.items():
        prediction = starter.prediction(EXAMPLES_DIR / name, prompts)
        wrong |= {f"{name[:7]} {p}" for p in prompts if prediction.found(p) != (p in present)}
    assert wrong <= {"wall_03 segment taping area", "wall_04 segment taping area"}
    assert len(holds) == 6


@pytest.mark.parametrize("folder", ["drywall-starter", "drywall-starter-base"])
def test_the_shipped_runs_name_no_path_of_the_machine_that_trained_them(folder):
    """A clone anywhere reads the same: paths relative to the repo (or the data root), run names their folder's."""
    from pathlib import PurePosixPath, PureWindowsPath

    run = STARTER_DIR.parent / folder

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    for path in [*run.rglob("*.json"), *run.rglob("*.jsonl")]:
        if path.name == "tokenizer.json":
            continue
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for text in filter(None, lines):
            absolute = [s for s in strings(json.loads(text)) if PurePosixPath(s).is_absolute()
                        or PureWindowsPath(s).drive]
            assert not absolute, f"{path.relative_to(run)}: {absolute}"
    assert json.loads((run / "config.json").read_text())["out"] == f"checkpoints/{folder}"
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["run"], summary["run_dir"]) == (folder, f"checkpoints/{folder}")
    assert json.loads((run / "best" / "drywall_qa.json").read_text())["run"] == folder
