"""Segmentation losses: pure functions of (logits, target) that the training loop and validation call."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def has_foreground(target: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which samples' targets hold foreground (a pixel over 1/2); the others are negatives."""
    return target.flatten(1).amax(1) > 0.5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, *,
                   empty: bool = True) -> torch.Tensor:
    """1 - soft Dice per sample, averaged. logits, target: (B, S, S); target in [0, 1].

    empty=False averages over the samples whose target has foreground only (0 when none has). On an empty
    target, Dice is near 1 unless the whole map's probabilities sum to under ~1, a far harsher push than BCE's.
    """
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    loss = 1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)
    if empty:
        return loss.mean()
    keep = has_foreground(target)
    return loss[keep].sum() / keep.sum().clamp(min=1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al.), mean over pixels. logits, target: (B, S, S)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = (-bce).exp()
    return ((1 - p_t) ** gamma * bce).mean()


def presence_loss(logits: torch.Tensor, target: torch.Tensor, kernel: int = 3, *,
                  positives: bool = True) -> torch.Tensor:
    """BCE of the photo-level presence score against "the mask is not empty", mean over the batch.

    The score is the one inference uses (engine.prediction.presence_score): the maximum over the map of the
    kernel x kernel box mean of the probabilities. So training pushes a prompt's strongest patch down on photos
    where its concept is absent (negatives: empty targets) and up where it is present. positives=False scores
    the negatives only (0 when there are none), leaving photos with foreground to the pixel terms.
    """
    prob = F.avg_pool2d(logits.sigmoid()[:, None], kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    score = prob.flatten(1).amax(1).clamp(1e-6, 1 - 1e-6)
    present = has_foreground(target).float()
    if positives:
        return F.binary_cross_entropy(score, present)
    keep = present < 0.5
    return F.binary_cross_entropy(score[keep], present[keep], reduction="sum") / keep.sum().clamp(min=1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, *, bce: float = 1.0, dice: float = 1.0,
                      focal: float = 0.0, presence: float = 0.0, dice_empty: bool = True,
                      presence_positives: bool = True, bce_empty: float = 1.0) -> torch.Tensor:
    """Weighted BCE + soft Dice (+ focal, + presence). logits: (B, S, S) before sigmoid; target: (B, S, S) in [0, 1].

    dice_empty=False leaves samples with empty targets (negatives) out of the Dice term; bce_empty weighs their
    pixel BCE against the other samples' (1: every pixel alike; 0: a negative is taught by the presence term only).
    The weighted BCE is still divided by the batch size, so a lighter weight also lightens BCE against the other terms.
    Computed in fp32 whatever the autocast dtype, so bf16/fp16 training keeps an accurate loss.
    """
    logits, target = logits.float(), target.float()
    total = logits.new_zeros(())
    if bce and bce_empty == 1.0:  # the plain mean, so runs without the weight train bit for bit as before it
        total = total + bce * F.binary_cross_entropy_with_logits(logits, target)
    elif bce:
        per_sample = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
        total = total + bce * torch.where(has_foreground(target), per_sample, bce_empty * per_sample).mean()
    if dice:
        total = total + dice * soft_dice_loss(logits, target, empty=dice_empty)
    if focal:
        total = total + focal * focal_loss(logits, target)
    if presence:
        total = total + presence * presence_loss(logits, target, positives=presence_positives)
    return total
