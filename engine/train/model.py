"""The model being trained: where it runs, in what precision, which layers learn, and its forward passes.

Three ways a batch reaches the decoder (`Trainee.mode`), chosen from the config:
- cached:  backbone frozen + feature_cache: the decoder trains from cached vision activations (features.py);
- plain:   HF's `CLIPSegForImageSegmentation.forward` every step (encoders under no_grad) — the baseline;
- full:    our own forward (vision tower -> text features -> decoder) with gradients in whatever layers are
           trainable (last N layers, everything, or a model trained from scratch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.models import (
    fit_config_to_tokenizer,
    image_processor,
    load_clipseg,
    new_model,
    reinit_decoder,
    resolve_source,
    tiny_config,
)
from engine.models.tokenizer import build_tokenizer
from engine.segmenter import cpu_supports_bf16, vision_activations
from engine.train.config import TrainConfig
from engine.train.precision import training_precision
from engine.train.sampling import CachedBatch, ImageBatch


@dataclass
class Trainee:
    """A model set up for training. mode: "cached", "plain" or "full" (module doc); amp_dtype: the autocast
    dtype, None for plain fp32; source: where the weights came from ("scratch", a model label, "resume:RUN")."""

    model: object  # CLIPSegForImageSegmentation, on `device`
    tokenizer: object
    processor: object  # the ViT image processor at cfg.image_size (mean and std for normalising)
    source: str
    device: torch.device
    amp_dtype: torch.dtype | None
    mode: str
    n_trainable: int
    teacher: object | None = None  # the starting model, frozen (cfg.replay_targets="teacher"), else None
    precision_reason: str = ""  # why amp_dtype, where it was measured (engine.train.precision), else ""

    @property
    def extract_layers(self) -> list[int]:
        return list(self.model.config.extract_layers)


def resolve_device(cfg: TrainConfig) -> torch.device:
    """cfg.device, with "auto" meaning CUDA when available, else the CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32: fp16 on CUDA; bf16 on CPU only if asked and supported.
    (A CPU run that trains the tower with amp_dtype="auto" measures instead: `cpu_training_precision`.)"""
    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    if cfg.amp_dtype == "bf16" and cpu_supports_bf16():
        return torch.bfloat16
    if cfg.amp_dtype == "fp32":
        return None
    if cfg.amp_dtype == "fp16":  # slow on CPU, but runs the CUDA AMP path (autocast + GradScaler) anywhere
        return torch.float16
    return None


def make_accelerator():
    """An `accelerate.Accelerator` when launched by `accelerate launch` with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator  # only data-parallel runs need accelerate

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    return Accelerator(cpu=use_cpu)


def build_trainee(cfg: TrainConfig, device: torch.device, *, resume_from: Path | None = None) -> Trainee:
    """The model a run starts from: a new "scratch" model, any model source, or (resume_from) a run's last/."""
    if resume_from is not None:
        model, tokenizer, _ = load_clipseg(resume_from)
        source = f"resume:{resume_from.parent.name}"
    elif cfg.model == "scratch":
        tokenizer = build_tokenizer()
        config = tiny_config(**cfg.scratch_arch) if cfg.scratch_arch else tiny_config(image_size=cfg.image_size)
        config.text_config.vocab_size = len(tokenizer)  # the embedding table holds the local vocabulary only
        model = new_model(fit_config_to_tokenizer(config, tokenizer), seed=cfg.seed)
        reinit_decoder(model, cfg.foreground_prior, cfg.film_init_std)
        source = "scratch"
    else:
        found = resolve_source(cfg.model)
        if found.kind == "onnx":
            raise ValueError(f"{cfg.model} is an ONNX export; training needs a PyTorch model (a folder, run or "
                             "Hub id).")
        model, tokenizer, _ = load_clipseg(found.path)
        source = found.label
    model.to(device)
    n_trainable = set_trainable(model, cfg)
    frozen = backbone_frozen(model)
    mode = "cached" if frozen and cfg.feature_cache else "plain" if frozen else "full"
    teacher = None
    if cfg.replay_targets == "teacher" and cfg.model != "scratch":  # from the starting model, even on a resume
        teacher, _, _ = load_clipseg(resolve_source(cfg.model).path)
        teacher.to(device).eval().requires_grad_(False)
    amp_dtype, reason = amp_dtype_for(cfg, device), ""
    if mode == "full" and device.type == "cpu" and cfg.amp and cfg.amp_dtype == "auto":
        amp_dtype, reason = cpu_training_precision(model, cfg.image_size)
    return Trainee(model, tokenizer, image_processor(cfg.image_size), source, device, amp_dtype, mode, n_trainable,
                   teacher, reason)


def cpu_training_precision(model, image_size: int) -> tuple[torch.dtype | None, str]:
    """(bf16 or None for fp32, the reason) for training `model`'s tower on this CPU, as measured here on its own
    forward and backward pass (engine.train.precision)."""
    layers = list(model.config.extract_layers)
    choice = training_precision(model, lambda m, px, ids, mask: forward_logits(m, px, ids, mask, layers), image_size)
    return (torch.bfloat16 if choice.precision == "bf16" else None), choice.reason


def set_trainable(model, cfg: TrainConfig) -> int:
    """Freeze all but what cfg.train names; returns the number of trainable parameters."""
    for p in model.parameters():
        p.requires_grad = cfg.train == "all"
    for p in model.decoder.parameters():
        p.requires_grad = True
    if cfg.train == "last_n":
        deepest = max(model.config.extract_layers)
        vision_layers = list(model.clip.vision_model.encoder.layers[: deepest + 1])
        text_layers = list(model.clip.text_model.encoder.layers)
        unfrozen = vision_layers[len(vision_layers) - cfg.unfreeze_vision_layers:] if cfg.unfreeze_vision_layers else []
        unfrozen += text_layers[len(text_layers) - cfg.unfreeze_text_layers:] if cfg.unfreeze_text_layers else []
        if cfg.unfreeze_text_layers:
            unfrozen += [model.clip.text_model.final_layer_norm, model.clip.text_projection]
        for module in unfrozen:
            for p in module.parameters():
                p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def backbone_frozen(model) -> bool:
    return not any(p.requires_grad for p in model.clip.parameters())


def forward_logits(model, pixel_values, input_ids, attention_mask, extract_layers) -> torch.Tensor:
    """Our own differentiable forward: truncated vision tower -> text features -> decoder.

    pixel_values (B, 3, S, S); input_ids/attention_mask (B, L), one prompt per image. Returns logits (B, S, S).
    Unlike HF's forward (encoders under no_grad), gradients reach any trainable encoder layer.
    """
    acts = vision_activations(model, pixel_values, extract_layers)
    cond = model.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.decoder(acts, cond).logits


def plain_logits(model, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    """HF's own forward (encoders under no_grad): the 'plain way' of decoder-only fine-tuning."""
    return model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits


def batch_logits(trainee: Trainee, batch: CachedBatch | ImageBatch) -> torch.Tensor:
    """Logits (B, S, S) before sigmoid, under autocast at trainee.amp_dtype, the way trainee.mode says."""
    model, dev = trainee.model, trainee.device
    with torch.autocast(dev.type, dtype=trainee.amp_dtype, enabled=trainee.amp_dtype is not None):
        if trainee.mode == "cached":
            logits = model.decoder([a.to(dev) for a in batch.acts], batch.cond.to(dev)).logits
        elif trainee.mode == "plain":
            logits = plain_logits(model, batch.pixel_values.to(dev), batch.input_ids.to(dev),
                                  batch.attention_mask.to(dev))
        else:
            logits = forward_logits(model, batch.pixel_values.to(dev), batch.input_ids.to(dev),
                                    batch.attention_mask.to(dev), trainee.extract_layers)
    return logits[None] if logits.dim() == 2 else logits  # HF squeezes a batch of one
