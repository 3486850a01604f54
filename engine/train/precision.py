"""Which precision a run that trains the vision tower uses on the CPU: measured on its own training step.

Training a tower (a model from scratch, or unfrozen layers) spends its time in the tower's forward and
backward passes, and whether bf16 autocast makes those faster depends on the CPU: on an Intel Xeon with AMX
the bundled model's stage-1 step measured 1.6x faster in bf16; on a CPU with AVX-512 BF16 but no AMX, bf16
matmuls were 2x slower. So `amp_dtype="auto"` on the CPU times a few forward-and-backward passes of the run's own model
at its own image size in fp32 and under bf16 autocast, taking turns, and keeps bf16 only where it is at least
`engine.precision.MIN_SPEEDUP` faster. The gradients are thrown away; the weights are never changed. The
choice is cached beside inference's (`engine.precision.cache_file`) per machine, model shape and image size.

Decoder-only runs keep fp32: their tower runs once, while the feature cache is built, and that build measures
its own precision (`cache_precision`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from engine.fileio import atomic_write_json
from engine.precision import MIN_SPEEDUP, PrecisionChoice, cache_file, machine_key, read_cache
from engine.segmenter import cpu_supports_bf16

MEASURE_BATCH = 4  # images per timed step: enough to reach the kernels a real batch uses, quick to time


# forward(model, pixel_values (B, 3, S, S), input_ids (B, L), attention_mask (B, L)) -> logits (B, S, S): the
# training forward, gradients reaching every trainable layer (engine.train.model passes its own).
Forward = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def step_seconds(model, forward: Forward, image_size: int, dtype: torch.dtype | None, batch: int) -> float:
    """Seconds of one forward and backward pass of `model` on a random batch of `batch` photos at `image_size` px,
    under autocast at `dtype` (None: fp32)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, image_size, image_size, generator=gen)
    ids = torch.randint(0, model.config.text_config.vocab_size, (batch, 8), generator=gen)
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = forward(model, pixels, ids, mask)
    logits.float().mean().backward()
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return seconds


def measure_training(model, forward: Forward, image_size: int, rounds: int = 3,
                     batch: int = MEASURE_BATCH) -> tuple[float, float]:
    """(fp32, bf16) seconds of one training pass of `model`, each the best of `rounds` after a warm-up, the two
    taking turns so that load from other processes hits both alike."""
    best = {None: float("inf"), torch.bfloat16: float("inf")}
    for dtype in best:  # warm-up: kernel selection, caches
        step_seconds(model, forward, image_size, dtype, batch)
    for _ in range(rounds):
        for dtype in best:
            best[dtype] = min(best[dtype], step_seconds(model, forward, image_size, dtype, batch))
    return best[None], best[torch.bfloat16]


def pick_training(fp32_s: float, bf16_s: float) -> PrecisionChoice:
    """bf16 where its training step measured at least MIN_SPEEDUP faster, else fp32; the reason says by how much."""
    speedup = fp32_s / bf16_s
    precision = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    return PrecisionChoice(precision, f"{precision}: a training step measured {fp32_s:.2f} s in fp32 and "
                                      f"{bf16_s:.2f} s in bf16 here ({speedup:.2f}x)", fp32_s, bf16_s)


def model_key(model, image_size: int, threads: int) -> str:
    """What the measurement depends on: the machine (`engine.precision.machine_key`), the model's shape and
    which of its parameters train, and the image size."""
    shape = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    digest = hashlib.sha256(f"{shape}|{trainable}".encode()).hexdigest()[:12]
    return f"train | {machine_key(threads)} | model {digest} | {image_size} px"


def training_precision(model, forward: Forward, image_size: int, *, path: Path | None = None
                       ) -> PrecisionChoice:
    """fp32 or bf16 autocast for training `model` on this CPU: the cached measurement for this machine and model
    shape, else a fresh one (then cached). fp32 where the CPU has no native bf16."""
    if not cpu_supports_bf16():
        return PrecisionChoice("fp32", "fp32: this CPU has no native bf16")
    path = path or cache_file()
    key = model_key(model, image_size, torch.get_num_threads())
    cached = read_cache(path)
    if key in cached:
        return PrecisionChoice(**cached[key])
    choice = pick_training(*measure_training(model, forward, image_size))
    try:
        atomic_write_json(path, {**cached, key: asdict(choice)})
    except OSError:  # a read-only home: measure again next time
        pass
    return choice
