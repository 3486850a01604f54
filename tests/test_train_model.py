"""engine/train/model.py: which layers learn, the way a batch reaches the decoder, and the autocast dtype."""

import pytest
import torch

from engine.models import load_clipseg
from engine.train import make_config
from engine.train.model import amp_dtype_for, backbone_frozen, build_trainee, set_trainable


def _trainable(module) -> bool:
    return all(p.requires_grad for p in module.parameters())


def test_decoder_recipe_freezes_the_backbone(tiny_model_dir):
    model = load_clipseg(tiny_model_dir)[0]
    n = set_trainable(model, make_config(None, train="decoder"))
    assert backbone_frozen(model) and _trainable(model.decoder)
    assert n == sum(p.numel() for p in model.decoder.parameters())


def test_last_n_unfreezes_the_last_layers_the_decoder_reads(tiny_model_dir):
    model = load_clipseg(tiny_model_dir)[0]
    set_trainable(model, make_config(None, train="last_n", unfreeze_vision_layers=1, unfreeze_text_layers=1))
    deepest = max(model.config.extract_layers)
    vision = model.clip.vision_model.encoder.layers
    text = model.clip.text_model.encoder.layers
    assert _trainable(vision[deepest]) and not any(p.requires_grad for p in vision[deepest - 1].parameters())
    assert _trainable(text[-1]) and not any(p.requires_grad for p in text[0].parameters())
    assert _trainable(model.clip.text_projection) and not backbone_frozen(model)


@pytest.mark.parametrize("train, feature_cache, mode", [("decoder", True, "cached"), ("decoder", False, "plain"),
                                                       ("all", True, "full")])
def test_the_mode_follows_the_recipe(tiny_model_dir, train, feature_cache, mode):
    cfg = make_config(None, model=str(tiny_model_dir), train=train, feature_cache=feature_cache, image_size=64)
    trainee = build_trainee(cfg, torch.device("cpu"))
    assert trainee.mode == mode and trainee.source.endswith("tiny") and trainee.processor.size["height"] == 64


def test_amp_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype_for(make_config(None, amp=False), cuda) is None
    assert amp_dtype_for(make_config(None), cuda) == torch.float16
    assert amp_dtype_for(make_config(None, amp_dtype="bf16"), cuda) == torch.bfloat16
    assert amp_dtype_for(make_config(None), cpu) is None  # no autocast on the CPU unless asked
    assert amp_dtype_for(make_config(None, amp_dtype="fp16"), cpu) == torch.float16
