"""Segmentation losses and the learning-rate schedule: pure functions the training loop calls."""

from __future__ import annotations

import math


def soft_dice_loss(logits, target, eps: float = 1.0):
    """1 - soft Dice per sample, averaged. logits, target: (B, S, S); target in [0, 1]."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return (1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)).mean()


def focal_loss(logits, target, gamma: float = 2.0):
    """Binary focal loss (Lin et al.), mean over pixels. logits, target: (B, S, S)."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = (-bce).exp()
    return ((1 - p_t) ** gamma * bce).mean()


def segmentation_loss(logits, target, *, bce: float = 1.0, dice: float = 1.0, focal: float = 0.0):
    """Weighted BCE + soft Dice (+ focal). logits: (B, S, S) before sigmoid; target: (B, S, S) in [0, 1].

    Computed in fp32 whatever the autocast dtype, so bf16/fp16 training keeps an accurate loss.
    """
    import torch.nn.functional as F

    logits, target = logits.float(), target.float()
    total = logits.new_zeros(())
    if bce:
        total = total + bce * F.binary_cross_entropy_with_logits(logits, target)
    if dice:
        total = total + dice * soft_dice_loss(logits, target)
    if focal:
        total = total + focal * focal_loss(logits, target)
    return total


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float = 0.02) -> float:
    """Linear warm-up to base_lr over warmup_steps, then cosine decay to base_lr * min_ratio at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
