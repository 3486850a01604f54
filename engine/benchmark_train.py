"""`python -m engine benchmark --train`: seconds per training image, HF's plain forward vs the feature cache.

Full-size rd64-refined architecture with random weights, 352x352, fp32 (and bf16 autocast where the CPU has
native bf16), real photos from ../shared. Both ways run the training loop's own step (`engine.train.loop.make_step`)
on one model, side by side in one process, interleaved so drift in machine load hits both alike; each figure
is the best of two rounds. FLOPs are counted with torch's FlopCounterMode (matmuls and convolutions,
forward and backward); each way's GFLOP/s is also given as a share of this machine's fp32 matmul peak, measured
in the same run (`engine.benchmark.torch_matmul_gflops`).

`end_to_end` times a whole job from "Train" to a saved model, both ways, through `engine.train.train` itself:
the cached way's cache build, validation and checkpoints included.
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from engine.benchmark import count_flops, roofline, torch_matmul_gflops
from engine.fileio import read_jsonl
from engine.models import full_size_config, make_random_model_folder, new_model, tiny_config
from engine.paths import SHARED_DATA
from engine.segmenter import cpu_supports_bf16
from engine.train.checkpoint import RunState
from engine.train.config import PRESETS, DataSpec, make_config
from engine.train.features import IDENTITY, build_feature_cache
from engine.train.loop import make_optimiser, make_step, train
from engine.train.model import build_trainee, forward_logits, resolve_device
from engine.train.precision import MEASURE_BATCH, measure_training, pick_training
from engine.train.sampling import DecodedImages, cached_batch, image_batch, open_sets


def step_flops(step: Callable[[Sequence], float], pairs: Sequence) -> float:
    """Matmul and convolution FLOPs (forward and backward) of one training step, per image."""
    return count_flops(lambda: step(pairs)) / len(pairs)


def time_steps(step: Callable[[Sequence], float], pairs: Sequence, repeats: int) -> float:
    """Seconds per image of `step(pairs)`: one warm-up step, then the mean of `repeats` timed ones."""
    step(pairs)
    start = time.perf_counter()
    for _ in range(repeats):
        step(pairs)
    return (time.perf_counter() - start) / (repeats * len(pairs))


def end_to_end(threads: int = 2, n_images: int = 64, epochs: int = 8, n_val: int = 16, image_size: int = 352) -> dict:
    """Wall seconds from "Train" to a saved model, the plain way against the cached way, in one run.

    The job: `n_images` training photos and `n_val` validation photos, half from each of ../shared's two sets
    (so negatives are in), `epochs` epochs, every other setting the default (views, batch size, validation and
    checkpoints each epoch), the full-size architecture with random weights. Each way runs `engine.train.train`
    itself; the cached way starts from an empty feature cache, so its build is part of its time.
    """
    torch.set_num_threads(threads)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_random_model_folder(Path(tmp) / "model", full_size_config())
        for way in ("cached", "plain"):
            cfg = make_config(None, model=str(model_dir), out=str(Path(tmp) / way), cache_dir=str(Path(tmp) / "cache"),
                              feature_cache=way == "cached", max_train_images=n_images // 2,
                              max_val_images=n_val // 2, epochs=epochs, image_size=image_size, threads=threads,
                              patience=0)
            start = time.perf_counter()
            summary = train(cfg)
            seconds = time.perf_counter() - start
            epochs_s = [row["seconds"] for row in read_jsonl(Path(cfg.out) / "metrics.jsonl")]
            runs[way] = {"s": seconds, "summary": summary, "epoch_s": epochs_s}
    plain, cached = runs["plain"], runs["cached"]
    return {"plain_s": plain["s"], "cached_s": cached["s"], "speedup": plain["s"] / cached["s"],
            "cache_build_s": cached["summary"].get("cache_build_seconds"),
            "cache_precision": cached["summary"].get("cache_precision"),
            "cache_views_built": cached["summary"].get("cache_views_built"),
            # each epoch's training + validation + checkpoint seconds (metrics.jsonl)
            "plain_epoch_s": plain["epoch_s"], "cached_epoch_s": cached["epoch_s"],
            # the rest of each way's time: loading the model and data, and writing checkpoints
            "plain_other_s": plain["s"] - sum(plain["epoch_s"]),
            "cached_other_s": cached["s"] - sum(cached["epoch_s"]) - cached["summary"].get("cache_build_seconds", 0),
            "images": n_images, "val_images": n_val, "epochs": epochs, "views": cfg.cache_views,
            "batch_size": cfg.batch_size, "image_size": image_size}


def tower_training(rounds: int = 2) -> dict:
    """What a run that trains every layer (a model from scratch, stage 1 of the bundled model) gains from bf16
    autocast on this CPU: seconds per image of its forward and backward pass in fp32 and in bf16, timed as such
    a run measures them before choosing (engine.train.precision), for the bundled model's stage-1 architecture at
    224 px and the full-size one at 352 px (random weights). {} where the CPU has no native bf16."""
    if not cpu_supports_bf16():
        return {}
    arch = PRESETS["starter-base"]["scratch_arch"]
    models = {"starter-base, 224 px": (new_model(tiny_config(**arch)), arch["vision_config"]["image_size"]),
              "full size, 352 px": (new_model(full_size_config()), 352)}
    out = {}
    for name, (model, size) in models.items():
        layers = list(model.config.extract_layers)
        fp32_s, bf16_s = measure_training(model, lambda m, px, ids, mask: forward_logits(m, px, ids, mask, layers),
                                          size, rounds=rounds)
        choice = pick_training(fp32_s, bf16_s)
        out[name] = {"fp32_s_per_image": fp32_s / MEASURE_BATCH, "bf16_s_per_image": bf16_s / MEASURE_BATCH,
                     "speedup": fp32_s / bf16_s, "chosen": choice.precision}
    return out


def benchmark_train(threads: int = 2, repeats: int | None = None, n_images: int = 8, batch_size: int = 4,
                    end_to_end_job: dict | None = None, cached_batches: Sequence[int] = (4, 8, 16)) -> dict:
    """Seconds per training image: HF's plain forward every step vs the feature cache (decoder-only training).

    threads: CPU threads (set here: the benchmark is an entry point). end_to_end_job: overrides of `end_to_end`'s
    job (tests make it small). cached_batches: batch sizes the cached step is also timed at on its own
    (`cached_by_batch`; 16 is training's default). Returns the JSON report (see the module doc).
    """
    repeats = repeats or 3
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_random_model_folder(Path(tmp) / "model", full_size_config())
        cfg = make_config(None, model=str(model_dir), out=str(Path(tmp) / "run"), cache_dir=str(Path(tmp) / "cache"),
                          data=[DataSpec(str(SHARED_DATA / "cracks"), ("segment crack",))],
                          max_train_images=max(n_images, *cached_batches),
                          max_val_images=1, batch_size=batch_size, image_size=352, augment=False, amp=False,
                          threads=threads, epochs=1)
        sets = open_sets(cfg)
        torch.manual_seed(cfg.seed)
        trainee = build_trainee(cfg, resolve_device(cfg))  # decoder-only: the "cached" mode
        opt = make_optimiser(trainee, cfg)
        state = RunState(batch_size=batch_size, rng=random.Random(cfg.seed))
        features = build_feature_cache(trainee.model, trainee.tokenizer, trainee.processor, sets, root=cfg.cache_dir,
                                       image_size=cfg.image_size, dtype=cfg.cache_dtype, views=[IDENTITY],
                                       device=trainee.device, on_event=lambda e: None, stop=threading.Event())
        images = DecodedImages(sets)
        batches = {
            "cached": lambda pairs: cached_batch(pairs, features, sets, state.rng),
            "plain": lambda pairs: image_batch(pairs, images, trainee.tokenizer, trainee.processor,
                                               image_size=cfg.image_size, augment=False, rng=state.rng),
        }

        def step_for(mode: str, amp_dtype: torch.dtype | None):
            return make_step(replace(trainee, mode=mode, amp_dtype=amp_dtype), opt, cfg, state, batches[mode],
                             steps_per_epoch=math.ceil(n_images / batch_size))

        pairs = [(0, i) for i in range(batch_size)]
        timings = {}
        precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if cpu_supports_bf16() else [])
        for _ in range(2):  # interleaved, so drift in machine load hits both ways alike
            for precision, dtype in precisions:
                for mode in ("plain", "cached"):
                    timings.setdefault((precision, mode), []).append(time_steps(step_for(mode, dtype), pairs, repeats))
        flops = {mode: step_flops(step_for(mode, None), pairs) for mode in ("plain", "cached")}
        by_batch = {b: min(time_steps(step_for("cached", None), [(0, i) for i in range(b)], repeats) for _ in range(2))
                    for b in cached_batches}
    best = {k: min(v) for k, v in timings.items()}
    plain, cached = best[("fp32", "plain")], best[("fp32", "cached")]
    result = {"plain_s_per_image": plain, "cached_s_per_image": cached, "speedup": plain / cached,
              "cache_build_s_per_image": features.build_seconds / features.built_views, "precision": "fp32",
              "cache_precision": features.precision,
              # The speed-up the arithmetic allows: matmul/conv FLOPs per image of each way, and the rate reached.
              "plain_gflop_per_image": flops["plain"] / 1e9, "cached_gflop_per_image": flops["cached"] / 1e9,
              "flop_ratio": flops["plain"] / flops["cached"],
              "plain_gflop_per_s": flops["plain"] / 1e9 / plain, "cached_gflop_per_s": flops["cached"] / 1e9 / cached}
    if ("bf16", "plain") in best:
        result["bf16_autocast"] = {"plain_s_per_image": best[("bf16", "plain")],
                                   "cached_s_per_image": best[("bf16", "cached")],
                                   "speedup": best[("bf16", "plain")] / best[("bf16", "cached")],
                                   "cached_speedup_vs_fp32_plain": plain / best[("bf16", "cached")]}
    peak = torch_matmul_gflops(torch.float32)
    result["fp32_peak_gflops"] = peak
    result["cached_peak_share"] = result["cached_gflop_per_s"] / peak
    result["plain_peak_share"] = result["plain_gflop_per_s"] / peak
    # The cached step alone at several batch sizes (on the CPU a batch over 8 runs in pieces of 8: loop.py).
    result["cached_by_batch"] = {str(b): {"s_per_image": s, **roofline(s, flops["cached"], peak)}
                                 for b, s in by_batch.items()}
    result["end_to_end"] = end_to_end(threads, **(end_to_end_job or {}))
    result["tower_training"] = tower_training()
    return {**result, "threads": threads, "image_size": 352, "batch_size": batch_size,
            "images": n_images, "repeats": repeats, "architecture": "CIDAS/clipseg-rd64-refined (random weights)"}
