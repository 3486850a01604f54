"""engine/train/features.py: the feature cache is built once and reused by the next run."""

import threading

import pytest
import torch

from engine.train.features import IDENTITY, build_feature_cache, cached_views
from engine.train.model import build_trainee
from engine.train.sampling import open_sets
from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


def _cache(cfg, events=None):
    sets = open_sets(cfg)
    trainee = build_trainee(cfg, torch.device("cpu"))
    return build_feature_cache(trainee.model, trainee.tokenizer, trainee.processor, sets, root=cfg.cache_dir,
                               image_size=cfg.image_size, dtype=cfg.cache_dtype,
                               views=cached_views(cfg.cache_views, cfg.seed), device=torch.device("cpu"),
                               on_event=(events.append if events is not None else lambda e: None),
                               stop=threading.Event())


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
