"""engine/train/features.py: the feature cache is built once and reused by the next run."""

import threading

import pytest
import torch

from engine.precision import PrecisionChoice as CachePrecision
from engine.precision import resolve_precision as cache_precision
from engine.train import features
from engine.train.events import LogEvent
from engine.train.features import (
    AGREEMENT_TOLERANCE,
    IDENTITY,
    build_feature_cache,
    cached_views,
    fast_tower,
    model_fingerprint,
    relative_error,
)
from engine.train.model import build_trainee
from engine.train.sampling import open_sets

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


def _cache(cfg, events=None, precision="fp32"):
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    return build_feature_cache(trainee.model, trainee.tokenizer, trainee.processor, sets, root=cfg.cache_dir,
                               image_size=cfg.image_size, dtype=cfg.cache_dtype,
                               views=cached_views(cfg.cache_views, cfg.seed), device=torch.device("cpu"),
                               on_event=(events.append if events is not None else lambda e: None),
                               stop=threading.Event(), precision=precision)


@pytest.mark.slow
def test_feature_cache_is_reused_across_runs(tiny_cfg, tmp_path):
    events = []
    first = _cache(tiny_cfg(feature_cache=True, cache_views=2), events)
    assert first.built_views == 2 * (6 + 6)  # K views of every training image
    assert events[0].phase == "caching" and events[-1].step == events[-1].steps == 24 and events[-1].caching
    files = sorted(p.name for p in first.cache.dir.iterdir())
    second = _cache(tiny_cfg(feature_cache=True, cache_views=2, out=str(tmp_path / "run2")))
    assert second.built_views == 0
    assert sorted(p.name for p in second.cache.dir.iterdir()) == files
    acts, mask = second.cache.load(second.digests[0][0], second.views[1])
    assert acts[0].dtype == torch.float32 and mask.shape == (64, 64)
    assert set(second.cond) == {"segment crack", "segment wall crack", "segment taping area"}


def test_cached_views_start_with_the_identity():
    views = cached_views(4, seed=0)
    assert views[0] == IDENTITY and len(set(views)) == 4 and views == cached_views(4, seed=0)


def _vision_state(model):
    return {k: v.clone() for k, v in model.clip.vision_model.state_dict().items()}


@pytest.mark.slow
def test_a_bf16_cache_agrees_with_fp32_and_leaves_the_model_alone(tiny_cfg, tmp_path):
    cfg = tiny_cfg(feature_cache=True, cache_views=1)
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    before = _vision_state(trainee.model)

    def build(precision, events):
        return build_feature_cache(trainee.model, trainee.tokenizer, trainee.processor, sets, root=cfg.cache_dir,
                                   image_size=cfg.image_size, dtype="float32", views=[IDENTITY],
                                   device=torch.device("cpu"), on_event=events.append, stop=threading.Event(),
                                   precision=precision)

    fast_events, ref_events = [], []
    fast, ref = build("bf16", fast_events), build("fp32", ref_events)
    assert (fast.precision, ref.precision) == ("bf16", "fp32")
    assert fast.cache.dir != ref.cache.dir  # a bf16 cache is never mistaken for an fp32 one
    log = [e.message for e in fast_events if isinstance(e, LogEvent)]
    assert len(log) == 1 and log[0].startswith(
        "feature cache: computing 12 views (bf16: asked for; its features are within")
    for digest in fast.digests[0]:
        a_fast, _ = fast.cache.load(digest, IDENTITY)
        a_ref, _ = ref.cache.load(digest, IDENTITY)
        assert relative_error(a_fast, a_ref) < AGREEMENT_TOLERANCE
        assert relative_error(a_fast, a_ref) > 0  # really computed in bf16
    after = _vision_state(trainee.model)
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.slow
def test_a_fast_cache_that_disagrees_falls_back_to_fp32(tiny_cfg, monkeypatch):
    monkeypatch.setattr(features, "AGREEMENT_TOLERANCE", 0.0)  # any bf16 rounding now counts as disagreement
    events = []
    built = _cache(tiny_cfg(feature_cache=True, cache_views=1, cache_precision="bf16"), events, precision="bf16")
    assert built.precision == "fp32"
    log = [e.message for e in events if isinstance(e, LogEvent)]
    assert "bf16 features differed from fp32's" in log[0]
    assert built.cache.dir.name == model_fingerprint(build_trainee(tiny_cfg(), torch.device("cpu")).model, 64)


def test_auto_cache_precision_follows_the_measured_choice(monkeypatch):
    monkeypatch.setenv("DRYWALL_PRECISION", "bf16")
    assert cache_precision("auto", torch.device("cpu")) == CachePrecision("bf16", "bf16: set by DRYWALL_PRECISION")
    monkeypatch.setenv("DRYWALL_PRECISION", "fp32")
    assert cache_precision("auto", torch.device("cpu")).precision == "fp32"
    assert cache_precision("bf16", torch.device("cpu")).reason == "bf16: asked for"
    assert cache_precision("auto", torch.device("cuda")).precision == "fp32"


def test_fast_tower_is_a_truncated_bf16_copy(tiny_cfg):
    model = build_trainee(tiny_cfg(), torch.device("cpu")).model
    tower = fast_tower(model, "bf16")
    assert len(tower.encoder.layers) == max(model.config.extract_layers) + 1
    assert len(model.clip.vision_model.encoder.layers) == model.config.vision_config.num_hidden_layers
    assert tower.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert model.clip.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32
    assert fast_tower(model, "fp32") is model.clip.vision_model
