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


def test_false_alarms_are_counted_at_the_score_that_keeps_95_percent_found(probe_tool):
    hold = np.r_[np.linspace(0.5, 1.0, 20), [0.2, 0.6, 0.9]]  # 20 positives, 3 negatives
    hold_y = np.r_[np.ones(20, bool), np.zeros(3, bool)]
    valid = np.r_[[0.55, 0.9], [0.1, 0.3, 0.8, 0.95]]
    valid_y = np.r_[np.ones(2, bool), np.zeros(4, bool)]
    r = probe_tool.scored(hold, hold_y, valid, valid_y)
    t = np.quantile(hold[:20], 0.05)  # 95% of the held-out positives at or above it
    assert 0.5 < t < 0.55
    assert r["false_alarm_holdout"] == pytest.approx(2 / 3)  # 0.6 and 0.9
    assert r["false_alarm_valid"] == pytest.approx(2 / 4) and r["found_valid"] == 1.0
    assert r["auroc_valid"] == pytest.approx(probe_tool.auroc(valid[:2], valid[2:]))


def test_features_come_from_the_decoder_without_changing_its_answer(probe_tool, tiny_segmenter, tiny_cfg):  # noqa: F811
    from engine.train.sampling import open_sets

    sets = open_sets(tiny_cfg())
    rows = probe_tool.photo_features(tiny_segmenter, sets, "valid")
    n_photos = sum(len(s.val) for s in sets)
    width = tiny_segmenter.model.config.reduce_dim
    assert rows["X"].shape == (2 * n_photos, 3 * width)  # both prompts on every photo; 3 poolings
    assert rows["own"].sum() == n_photos and not (rows["present"] & ~rows["own"]).any()
    image, _ = sets[1].val[0]  # the first joints photo, both prompts, as the app scores it
    pred = tiny_segmenter.prediction(image, [s.prompts[0] for s in sets])
    first = sum(len(s.val) for s in sets[:1]) * 2
    assert rows["map_presence"][first:first + 2] == pytest.approx([pred.presence[s.prompts[0]] for s in sets])
    # the class token and the pooled patch tokens differ between the two prompts (the decoder is conditioned)
    assert not np.allclose(rows["X"][first], rows["X"][first + 1])
    # the hook is gone afterwards
    assert not tiny_segmenter.model.decoder.layers[-1]._forward_hooks
