"""CLIPSeg configs and fresh models, built offline: the full-size architecture, a tiny one for tests, and a
randomly initialised model with a trainable decoder (tests, benchmarks and from-scratch training start here).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation


def full_size_config():
    """The CIDAS/clipseg-rd64-refined architecture (ViT-B/16 vision, 12 layers; reduce_dim 64; complex deconv)."""
    return CLIPSegConfig(use_complex_transposed_convolution=True, vision_config={"patch_size": 16})


def tiny_config(vocab_size: int = 1024, image_size: int = 64, **overrides):
    """A CLIPSeg small enough for unit tests (hidden 32, vision 4 layers of which the decoder reads 0-2).

    Layer 3 of the vision tower is deliberately past the deepest extract layer, so tests see it skipped.
    """
    kwargs = dict(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=32,
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
        ),
        vision_config=dict(
            image_size=image_size, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4,
        ),
        projection_dim=32, reduce_dim=16, extract_layers=[0, 1, 2], decoder_num_attention_heads=2,
        decoder_intermediate_size=32, use_complex_transposed_convolution=True,
    )
    kwargs.update(overrides)
    return CLIPSegConfig(**kwargs)


def fit_config_to_tokenizer(config, tokenizer):
    """Point the text config at the tokenizer's ids: CLIPSeg pools the text at the first `eos_token_id`."""
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    return config


def reinit_decoder(model, foreground_prior: float = 0.05, film_std: float = 1e-3) -> None:
    """Give the decoder trainable starting weights for training from scratch.

    A fresh `CLIPSegConfig` initialises the FiLM, reduce and transposed-convolution layers with N(0, 1)
    weights (logits with std ~500), which collapses training to all-background. Here: PyTorch's default
    init, FiLM as the identity (multiply by 1, add 0) plus noise of `film_std` (larger values let different
    prompts steer the decoder apart from the first step), and a last-layer bias at the logit of
    `foreground_prior` so the initial loss matches the mostly-background masks.
    """
    decoder = model.decoder
    for module in decoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    with torch.no_grad():
        for film, bias in ((decoder.film_mul, 1.0), (decoder.film_add, 0.0)):
            nn.init.normal_(film.weight, std=film_std)
            nn.init.constant_(film.bias, bias)
        last = decoder.transposed_convolution
        last = last[-1] if isinstance(last, nn.Sequential) else last
        last.bias.fill_(math.log(foreground_prior / (1 - foreground_prior)))


def new_model(config, seed: int = 0):
    """A randomly initialised `CLIPSegForImageSegmentation` with a trainable decoder (see `reinit_decoder`)."""
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config)
    reinit_decoder(model)
    return model.eval()


def processor_size_for(config) -> int:
    """Input size for a config: 352 for the CLIP ViT-B/16 shape (CLIPSeg's recipe), else the vision image size."""
    size = config.vision_config.image_size
    return 352 if size == 224 else size
