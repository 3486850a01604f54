"""The learning-rate schedule: a pure function of the step (nanoGPT's `get_lr`)."""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float = 0.02) -> float:
    """Linear warm-up to base_lr over warmup_steps, then cosine decay to base_lr * min_ratio at total_steps.

    step counts from 0; the warm-up's first step already has base_lr / warmup_steps (never 0). Past
    total_steps the rate stays at its end value.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
