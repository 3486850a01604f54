"""engine/train/schedule.py: the warm-up, the end value and the decay of cosine_lr."""

import pytest

from engine.train.schedule import cosine_lr


def test_warmup_rises_linearly_to_the_base_rate():
    rates = [cosine_lr(s, 100, 4, 1e-3) for s in range(4)]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert cosine_lr(4, 100, 4, 1e-3) == pytest.approx(1e-3)  # the decay starts from the base rate


def test_no_warmup_starts_at_the_base_rate():
    assert cosine_lr(0, 10, 0, 0.1) == pytest.approx(0.1)


def test_decay_ends_at_min_ratio_and_stays_there():
    assert cosine_lr(100, 100, 10, 1e-3) == pytest.approx(2e-5)
    assert cosine_lr(500, 100, 10, 1e-3) == pytest.approx(2e-5)
    assert cosine_lr(100, 100, 0, 1.0, min_ratio=0.1) == pytest.approx(0.1)
    assert cosine_lr(55, 100, 10, 1.0, min_ratio=0.0) == pytest.approx(0.5)  # half-way: half the rate


def test_decay_is_monotone_after_warmup():
    rates = [cosine_lr(s, 200, 20, 1e-3) for s in range(20, 230)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[0] > rates[-1] > 0
