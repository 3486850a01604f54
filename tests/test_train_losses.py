"""engine/train/losses.py: known values on small tensors."""

import math

import pytest
import torch

from engine.train.losses import focal_loss, segmentation_loss, soft_dice_loss

LN2 = math.log(2)


def test_soft_dice_is_zero_for_a_perfect_confident_prediction():
    target = torch.ones(2, 3, 3)
    assert soft_dice_loss(torch.full((2, 3, 3), 50.0), target).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_of_an_undecided_prediction_on_an_empty_mask():
    # p = 0.5 on 4 pixels, no foreground: 1 - (0 + 1) / (2 + 0 + 1) = 2/3
    assert soft_dice_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == pytest.approx(2 / 3)


def test_soft_dice_averages_over_samples():
    logits = torch.stack([torch.full((2, 2), 50.0), torch.zeros(2, 2)])
    target = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])
    assert soft_dice_loss(logits, target).item() == pytest.approx((0 + 2 / 3) / 2, abs=1e-6)


def test_soft_dice_can_leave_empty_targets_out():
    logits = torch.stack([torch.full((2, 2), 50.0), torch.zeros(2, 2)])
    target = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])
    # the empty-target sample (2/3 on its own) no longer counts; the perfect one scores 0
    assert soft_dice_loss(logits, target, empty=False).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), empty=False).item() == 0.0
    undecided = torch.zeros(2, 2, 2, requires_grad=True)
    soft_dice_loss(undecided, target, empty=False).backward()
    assert undecided.grad[1].abs().sum() == 0 and (undecided.grad[0] < 0).all()


def test_presence_loss_on_negatives_only():
    from engine.train.losses import presence_loss

    # sample 0: foreground and a weak map (its presence loss is large); sample 1: empty target, map at p = 1/2
    logits = torch.stack([torch.full((4, 4), -3.0), torch.zeros(4, 4)]).requires_grad_()
    target = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])
    assert presence_loss(logits, target, positives=False).item() == pytest.approx(LN2, abs=1e-5)
    presence_loss(logits, target, positives=False).backward()
    assert logits.grad[0].abs().sum() == 0 and (logits.grad[1] >= 0).all() and logits.grad[1].sum() > 0
    assert presence_loss(logits, torch.ones(2, 4, 4), positives=False).item() == 0.0


def test_focal_loss_at_p_one_half():
    # bce = ln 2 per pixel, p_t = 0.5: (1 - 0.5)^2 * ln 2
    assert focal_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == pytest.approx(LN2 / 4)
    assert focal_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), gamma=0).item() == pytest.approx(LN2)


def test_segmentation_loss_weights_its_terms():
    logits, target = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    assert segmentation_loss(logits, target, bce=1, dice=0).item() == pytest.approx(LN2)
    assert segmentation_loss(logits, target, bce=0, dice=1).item() == pytest.approx(2 / 3)
    total = segmentation_loss(logits, target, bce=2, dice=3, focal=1).item()
    assert total == pytest.approx(2 * LN2 + 3 * 2 / 3 + LN2 / 4)
    assert segmentation_loss(logits, target, bce=0, dice=0).item() == 0.0


def test_segmentation_loss_is_fp32_for_half_inputs():
    loss = segmentation_loss(torch.zeros(1, 2, 2, dtype=torch.bfloat16), torch.zeros(1, 2, 2, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(LN2 + 2 / 3)


def test_segmentation_loss_has_gradients():
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    segmentation_loss(logits, torch.ones(1, 2, 2)).backward()
    assert (logits.grad < 0).all()  # raising the logits towards the all-foreground target lowers the loss


def test_presence_loss_scores_the_score_inference_uses():
    from engine.prediction import presence_score
    from engine.train.losses import presence_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 16, 16, generator=gen) * 3
    empty, present = torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)
    present[0, 4:6, 4:6] = 1.0
    score = presence_score(logits.sigmoid()[0].numpy())
    assert presence_loss(logits, empty).item() == pytest.approx(-math.log(1 - score), rel=1e-4)
    assert presence_loss(logits, present).item() == pytest.approx(-math.log(score), rel=1e-4)
    silent, firing = torch.full((2, 8, 8), -20.0), torch.full((2, 8, 8), 20.0)
    assert presence_loss(silent, torch.zeros(2, 8, 8)).item() < 1e-5  # nothing asked for, nothing found
    assert presence_loss(firing, torch.zeros(2, 8, 8)).item() > 10  # fires where the concept is absent
    total = segmentation_loss(firing, torch.zeros(2, 8, 8), presence=2.0)
    assert total.item() == pytest.approx(segmentation_loss(firing, torch.zeros(2, 8, 8)).item()
                                         + 2 * presence_loss(firing, torch.zeros(2, 8, 8)).item(), rel=1e-5)


def test_pixel_bce_on_negatives_is_weighted_apart():
    # sample 0: foreground everywhere, map at p = 1/2 (BCE ln 2); sample 1: empty target, logit 2 (BCE ln(1 + e^2))
    logits = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 2.0)]).requires_grad_()
    target = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])
    negative = math.log(1 + math.exp(2.0))
    assert segmentation_loss(logits, target, dice=0, bce_empty=1.0).item() == pytest.approx((LN2 + negative) / 2)
    assert segmentation_loss(logits, target, dice=0, bce_empty=0.25).item() == pytest.approx((LN2 + negative / 4) / 2)
    segmentation_loss(logits, target, dice=0, bce_empty=0.0).backward()
    assert logits.grad[1].abs().sum() == 0 and (logits.grad[0] < 0).all()  # the negative is left to presence
