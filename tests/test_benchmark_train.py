"""engine/benchmark_train.py: the FLOPs and timings of the training loop's own step, plain vs cached."""

import random
import threading
from dataclasses import replace

import pytest
import torch

from engine.benchmark_train import step_flops, time_steps
from engine.train.checkpoint import RunState
from engine.train.loop import make_batches, make_optimiser, make_step
from engine.train.model import build_trainee
from engine.train.sampling import DecodedImages, image_batch, open_sets

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


@pytest.mark.slow
def test_step_flops_show_the_work_the_cache_removes(tiny_cfg):
    cfg = tiny_cfg(feature_cache=True, augment=False)
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    opt = make_optimiser(trainee, cfg)
    state = RunState(batch_size=2, rng=random.Random(0))
    cached, _ = make_batches(trainee, sets, cfg, state.rng, lambda e: None, threading.Event())
    images = DecodedImages(sets)
    plain = lambda pairs: image_batch(pairs, images, trainee.tokenizer, trainee.processor,  # noqa: E731
                                      image_size=64, augment=False, rng=state.rng)
    pairs = [(0, 0), (0, 1)]
    plain_step = make_step(replace(trainee, mode="plain"), opt, cfg, state, plain, steps_per_epoch=1)
    plain_flops = step_flops(plain_step, pairs)
    cached_step = make_step(trainee, opt, cfg, state, cached, steps_per_epoch=1)
    assert plain_flops > 2 * step_flops(cached_step, pairs) > 0
    assert time_steps(cached_step, pairs, repeats=2) > 0
    assert state.global_step == 5  # every step went through the loop's own step function


@pytest.mark.slow
def test_benchmark_report_fields(monkeypatch):
    """The whole benchmark on a tiny architecture (the full-size one takes minutes): the report's fields."""
    import engine.benchmark_train as bench
    from engine.models import tiny_config

    monkeypatch.setattr(bench, "full_size_config", lambda: tiny_config(image_size=64))
    threads = torch.get_num_threads()
    try:
        report = bench.benchmark_train(threads=2, repeats=1, n_images=4, batch_size=2,
                                       end_to_end_job={"n_images": 4, "epochs": 2, "n_val": 2, "image_size": 64},
                                       cached_batches=(2, 4))
    finally:
        torch.set_num_threads(threads)
    assert {"plain_s_per_image", "cached_s_per_image", "speedup", "cache_build_s_per_image", "precision",
            "plain_gflop_per_image", "cached_gflop_per_image", "flop_ratio", "plain_gflop_per_s",
            "cached_gflop_per_s", "threads", "image_size", "batch_size", "images", "repeats",
            "architecture"} <= set(report)
    assert report["flop_ratio"] > 1 and report["speedup"] > 0 and report["images"] == 4
    assert 0 < report["cached_peak_share"] < 5 and report["fp32_peak_gflops"] > 0
    assert set(report["cached_by_batch"]) == {"2", "4"} and report["cached_by_batch"]["4"]["s_per_image"] > 0
    for row in report["tower_training"].values():  # {} on a CPU without native bf16
        assert row["fp32_s_per_image"] > 0 and row["chosen"] == ("bf16" if row["speedup"] >= 1.05 else "fp32")
    e2e = report["end_to_end"]
    assert e2e["speedup"] == pytest.approx(e2e["plain_s"] / e2e["cached_s"])
    assert e2e["cache_views_built"] == 4 * e2e["views"] and e2e["cache_precision"] in ("fp32", "bf16")
    assert len(e2e["plain_epoch_s"]) == len(e2e["cached_epoch_s"]) == 2 and e2e["cache_build_s"] > 0
