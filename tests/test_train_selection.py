"""engine/train/selection.py: which epoch becomes best/, and when patience stops a run (pure, and in a run)."""

import json
import random

import pytest

from engine.train.checkpoint import RunState
from engine.train.selection import judge_epoch

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


def _verdicts(scores, **policy):
    state = RunState(batch_size=2, rng=random.Random(0))
    return [(v.keep, v.stop) for v in (judge_epoch(state, e, s, **policy) for e, s in enumerate(scores, 1))], state


def test_best_keeps_only_a_strictly_better_epoch():
    verdicts, state = _verdicts([0.3, 0.5, 0.5, 0.4, 0.6])
    assert [keep for keep, _ in verdicts] == [True, True, False, False, True]  # a tie keeps the earlier epoch
    assert (state.best_epoch, state.best_score, state.bad_epochs) == (5, 0.6, 0)
    assert not any(stop for _, stop in verdicts)  # patience 0: never stops early


def test_patience_stops_after_that_many_epochs_without_a_new_best():
    verdicts, state = _verdicts([0.3, 0.5, 0.4, 0.45], patience=2)
    assert verdicts[:4] == [(True, False), (True, False), (False, False), (False, True)]
    assert state.best_epoch == 2 and state.bad_epochs == 2
    verdicts, _ = _verdicts([0.3, 0.2, 0.4, 0.3, 0.35], patience=2)  # a new best resets the count
    assert [stop for _, stop in verdicts] == [False, False, False, False, True]


def test_last_keeps_every_epoch_and_never_stops_early():
    verdicts, state = _verdicts([0.5, 0.1, 0.05], select="last", patience=1)
    assert verdicts == [(True, False)] * 3 and state.best_epoch == 3 and state.best_score == 0.05
    with pytest.raises(ValueError, match="select must be 'best' or 'last'"):
        judge_epoch(RunState(batch_size=2, rng=random.Random(0)), 1, 0.5, select="first")


@pytest.mark.slow
def test_a_run_with_patience_stops_early_and_keeps_its_best(tiny_cfg):  # noqa: F811
    """A learning rate too small to change a score: no epoch beats the first, so patience 2 ends a 6-epoch run
    after epoch 3, with epoch 1 as best."""
    cfg = tiny_cfg(epochs=6, patience=2, lr=1e-12, warmup_epochs=0, feature_cache=False)
    from engine.train.loop import train

    summary = train(cfg)
    assert summary["epochs_done"] == 3 and summary["best_epoch"] == 1
    assert any("early stop: no better val mIoU for 2 epochs" in line for line in summary["log"])
    with open(f"{cfg.out}/metrics.jsonl") as f:
        metrics = [json.loads(line) for line in f]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
