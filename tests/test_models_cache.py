"""engine/models/cache.py: the LRU of loaded segmenters (load once, evict retrained runs, ONNX keys)."""

import threading
import time

from engine.models import DEFAULT_TORCH_PRECISION
from engine.models.cache import ModelCache, is_onnx_source


class _Loader:
    def __init__(self, delay=0.0):
        self.calls, self.delay = [], delay

    def __call__(self, source, precision):
        self.calls.append((source, precision))
        time.sleep(self.delay)
        return object()


def test_cache_loads_once_and_evicts_least_recently_used():
    DEFAULT = DEFAULT_TORCH_PRECISION
    OTHER = "bf16" if DEFAULT != "bf16" else "fp32"

    loader = _Loader()
    cache = ModelCache(maxsize=2, loader=loader)
    a = cache.get("a")
    assert cache.get("a") is a and loader.calls == [("a", DEFAULT)]
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("a", OTHER)  # evicts b
    assert set(cache.keys()) == {("a", DEFAULT), ("a", OTHER)}
    cache.get("b")
    assert loader.calls[-1] == ("b", DEFAULT) and len(cache) == 2


def test_cache_evicts_a_retrained_run(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    cache = ModelCache(maxsize=4, loader=_Loader())
    cache.get(str(run), "fp32")
    cache.get(str(run / "best"), "bf16")
    cache.get("other", "fp32")
    assert sorted(cache.evict(run)) == [(str(run), "fp32"), (str(run / "best"), "bf16")]
    assert cache.keys() == [("other", "fp32")]


def test_a_model_saved_again_is_loaded_again_by_every_caller(tmp_path, tiny_model_dir):
    import shutil

    from engine.models import make_random_model_folder

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "best")
    (run / "config.json").write_text("{}")  # a run folder: its TrainConfig beside best/
    loader = _Loader()
    cache = ModelCache(maxsize=4, loader=loader)
    first = cache.get(str(run))
    assert cache.get(str(run)) is first and len(loader.calls) == 1
    make_random_model_folder(tmp_path / "new", seed=7)  # a new best is saved over the old one
    shutil.rmtree(run / "best")
    shutil.copytree(tmp_path / "new", run / "best")
    fresh = cache.get(str(run))
    assert fresh is not first and len(loader.calls) == 2 and cache.get(str(run)) is fresh


def test_cache_key_leaves_exports_at_their_own_precision(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "manifest.json").write_text("{}")
    assert ModelCache.key(tmp_path / "export") == (str(tmp_path / "export"), None)
    assert ModelCache.key(tmp_path / "run") == (str(tmp_path / "run"), DEFAULT_TORCH_PRECISION)
    assert ModelCache.key(" ", "bf16") == ("auto", "bf16")


def test_cache_loads_once_under_concurrent_requests():
    loader = _Loader(delay=0.2)
    cache = ModelCache(loader=loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("m"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loader.calls) == 1 and len({id(r) for r in results}) == 1


def test_cache_loads_real_models(tiny_model_dir):
    cache = ModelCache(maxsize=1)
    seg = cache.get(str(tiny_model_dir))
    assert seg.threshold == 0.5 and cache.get(str(tiny_model_dir)) is seg


def test_is_onnx_source_reads_the_folder_only(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "manifest.json").write_text("{}")
    assert is_onnx_source(tmp_path / "export") and is_onnx_source(f"  {tmp_path / 'export'}  ")
    assert not is_onnx_source(tmp_path) and not is_onnx_source("CIDAS/clipseg-rd64-refined")
