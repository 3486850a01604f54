"""tools/presence_probe.py: the decoder-token features it reads, the probe it fits and the rule it scores by."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.train_helpers import tiny_cfg  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def probe_tool():
    spec = importlib.util.spec_from_file_location("presence_probe", REPO_ROOT / "tools" / "presence_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_logistic_probe_separates_what_one_feature_separates(probe_tool):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x[:, 2] > 0.3  # only the third feature matters
    score = probe_tool.fit_logistic(x, y.astype(float), l2=1e-3)
    new = rng.normal(size=(100, 5))
    s = score(new)
    assert probe_tool.auroc(s[new[:, 2] > 0.3], s[new[:, 2] <= 0.3]) > 0.98


def test_the_threshold_keeps_95_percent_of_the_held_out_photos_found(probe_tool):
    positives = np.linspace(0.5, 1.0, 11)  # the joints set's 11 held-out photos: all 11 must stay found
    assert probe_tool.found_threshold(positives) == 0.5
    assert probe_tool.found_threshold(np.linspace(0.5, 1.0, 21)) == pytest.approx(0.525)  # 20 of 21 found
    hold = np.r_[positives, [0.2, 0.6, 0.9]]
    hold_y = np.r_[np.ones(11, bool), np.zeros(3, bool)]
    valid = np.r_[[0.45, 0.9], [0.1, 0.3, 0.8, 0.95]]
    valid_y = np.r_[np.ones(2, bool), np.zeros(4, bool)]
    r = probe_tool.scored(hold, hold_y, valid, valid_y)
    assert r["found_holdout"] == 1.0 and r["false_alarm_holdout"] == pytest.approx(2 / 3)  # 0.6 and 0.9
    assert r["found_valid"] == 0.5 and r["false_alarm_valid"] == pytest.approx(2 / 4)
    assert r["auroc_valid"] == pytest.approx(probe_tool.auroc(valid[:2], valid[2:]))


def test_a_prompts_rows_are_its_labelled_photos_and_the_other_sets_photos(probe_tool):
    part = {"prompt": np.array([0, 1, 0, 1, 0, 1]), "own": np.array([True, False, True, False, False, True]),
            "present": np.array([True, False, False, False, False, True])}  # photo 2: own set, empty label
    pick, present = probe_tool.rows_for(part, 0)
    assert pick.tolist() == [True, False, False, False, True, False]
    assert present.tolist() == [True, False]


def test_features_are_the_last_decoder_layers_tokens(probe_tool, tiny_segmenter, tiny_cfg):  # noqa: F811
    import torch

    from engine.train.sampling import open_sets

    sets = open_sets(tiny_cfg())
    prompts = [s.prompts[0] for s in sets]
    rows = probe_tool.photo_features(tiny_segmenter, sets, "valid")
    n_photos = sum(len(s.val) for s in sets)
    width = tiny_segmenter.model.config.reduce_dim
    assert rows["X"].shape == (2 * n_photos, 3 * width)  # both prompts on every photo; 3 poolings
    assert rows["own"].sum() == n_photos and not (rows["present"] & ~rows["own"]).any()
    labels = [bool(np.asarray(s.val[i][1]).any()) for s in sets for i in range(len(s.val))]
    assert rows["present"][rows["own"]].tolist() == labels
    image, _ = sets[1].val[0]  # the first joints photo, both prompts, as the app scores it
    pred = tiny_segmenter.prediction(image, prompts)
    first = len(sets[0].val) * 2
    assert rows["map_presence"][first:first + 2] == pytest.approx([pred.presence[p] for p in prompts])
    assert not tiny_segmenter.model.decoder.layers[-1]._forward_hooks  # the hook is gone afterwards

    # the captured tokens are those the mask is drawn from: the transposed convolution of the patch tokens
    caught = {}
    hook = tiny_segmenter.model.decoder.layers[-1].register_forward_hook(lambda m, a, out: caught.update(x=out))
    try:
        logits = torch.as_tensor(np.asarray(tiny_segmenter.logits(tiny_segmenter.preprocess([image]), prompts)))
    finally:
        hook.remove()
    x = caught["x"][:, 1:]  # (P, g * g, C) without the class token
    g = int(x.shape[1] ** 0.5)
    with torch.inference_mode():
        redrawn = tiny_segmenter.model.decoder.transposed_convolution(x.transpose(1, 2).reshape(2, -1, g, g))
    assert torch.allclose(redrawn.squeeze(1), logits[0], atol=1e-4)
    mean = x.mean(1).numpy()
    assert np.allclose(rows["X"][first:first + 2, width:2 * width], mean, atol=1e-5)


def test_train_rows_leave_the_generated_walls_out(probe_tool, tiny_segmenter, tiny_cfg):  # noqa: F811
    import dataclasses

    from engine.train.sampling import open_sets

    cfg = tiny_cfg()
    sets = open_sets(cfg)
    short = [dataclasses.replace(s, spec=dataclasses.replace(s.spec, synthetic_walls=2)) for s in sets]
    rows = probe_tool.photo_features(tiny_segmenter, short, "train")  # as if each set's last 2 were walls
    assert len(rows["X"]) == 2 * sum(len(s.train) - 2 for s in sets)
