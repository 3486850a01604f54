"""engine/appsupport.py: safe zip extraction, the model cache, and the one-call helpers behind the app."""

import stat
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

import engine.app as support
from engine.app import ArchiveError, ModelCache, safe_extract_zip


def _zip(path, entries):
    """entries: (name, bytes) or (ZipInfo, bytes); deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------------------------------ zip extraction


def test_extracts_a_normal_export_and_finds_its_root(tmp_path):
    z = _zip(tmp_path / "set.zip", [
        ("my-set/data.yaml", b"train: train/images\n"),
        ("my-set/train/images/a.jpg", b"jpeg"),
        ("my-set/train/labels/a.txt", b"0 0.5 0.5 0.1 0.1\n"),
        ("__MACOSX/my-set/._a.jpg", b"junk"),
        ("my-set/.DS_Store", b"junk"),
    ])
    dest = safe_extract_zip(z, tmp_path / "out")
    assert (dest / "my-set/train/labels/a.txt").read_bytes() == b"0 0.5 0.5 0.1 0.1\n"
    assert not (dest / "__MACOSX").exists() and not (dest / "my-set/.DS_Store").exists()
    assert support.dataset_root(dest) == dest / "my-set"


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/etc/evil.txt", "C:/evil.txt", "..\\evil.txt"])
def test_rejects_path_traversal(tmp_path, name):
    z = _zip(tmp_path / "bad.zip", [("fine.txt", b"x"), (name, b"pwned")])
    with pytest.raises(ArchiveError, match="absolute path|climbs out"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_rejects_symlinks(tmp_path):
    info = zipfile.ZipInfo("link")
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "link.zip", [("a.txt", b"x"), (info, b"/etc/passwd")])
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rejects_too_many_files(tmp_path):
    z = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(6)])
    with pytest.raises(ArchiveError, match="6 entries, over the limit of 5"):
        safe_extract_zip(z, tmp_path / "out", max_files=5)
    assert safe_extract_zip(z, tmp_path / "ok", max_files=6) == tmp_path / "ok"


def test_rejects_too_large(tmp_path):
    z = _zip(tmp_path / "big.zip", [("a.bin", np.random.default_rng(0).bytes(4000))])
    with pytest.raises(ArchiveError, match="unpacks to .* over the limit"):
        safe_extract_zip(z, tmp_path / "out", max_bytes=3000)


def test_rejects_zip_bombs(tmp_path):
    z = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(support.RATIO_CHECK_BYTES + 1024**2))])
    assert z.stat().st_size < 100_000  # ~1000x compression
    with pytest.raises(ArchiveError, match="zip bomb"):
        safe_extract_zip(z, tmp_path / "out")


def test_not_a_zip_says_so(tmp_path):
    bad = tmp_path / "photo.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="not a zip file"):
        safe_extract_zip(bad, tmp_path / "out")


def test_as_data_path_extracts_zips_and_checks_folders(tmp_path):
    z = _zip(tmp_path / "set.zip", [("wrap/valid/images/a.jpg", b"x"), ("wrap/valid/labels/a.txt", b"")])
    root = support.as_data_path(z, tmp_path / "uploads")
    assert root.name == "wrap" and (root / "valid/images/a.jpg").is_file()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        support.as_data_path(tmp_path / "missing", tmp_path / "uploads")
    with pytest.raises(ValueError, match="No data set given"):
        support.as_data_path("  ", tmp_path / "uploads")


# ------------------------------------------------------------------------------------------ model cache


class _Loader:
    def __init__(self, delay=0.0):
        self.calls, self.delay = [], delay

    def __call__(self, source, precision):
        self.calls.append((source, precision))
        time.sleep(self.delay)
        return object()


def test_cache_loads_once_and_evicts_least_recently_used():
    from engine.models import DEFAULT_TORCH_PRECISION as DEFAULT

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


def test_cache_key_leaves_exports_at_their_own_precision(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "manifest.json").write_text("{}")
    assert ModelCache.key(tmp_path / "export") == (str(tmp_path / "export"), None)
    from engine.models import DEFAULT_TORCH_PRECISION

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


# ------------------------------------------------------------------------------------------ helpers


def test_parse_prompts_accepts_lines_commas_and_picks():
    assert support.parse_prompts("segment crack, segment taping area\nsegment crack\n") == [
        "segment crack", "segment taping area"]
    assert support.parse_prompts("", ["segment crack"]) == ["segment crack"]
    with pytest.raises(ValueError, match="No prompt given"):
        support.parse_prompts(" ,\n ")


def test_image_id_and_run_names(tmp_path):
    assert support.image_id_for("/tmp/gradio/abc/IMG 0042.jpg") == "IMG_0042"
    assert support.image_id_for(None) == "photo"
    assert support.new_run_dir(tmp_path, "my-run") == tmp_path / "my-run"
    assert support.new_run_dir(tmp_path, "").name.startswith("run-")
    with pytest.raises(ValueError, match="letters, digits"):
        support.new_run_dir(tmp_path, "../escape")


def test_segment_photo_writes_named_masks_at_full_size(tiny_segmenter, shared_data, tmp_path):
    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    result = support.segment_photo(tiny_segmenter, str(photo), ["segment crack", "segment taping area"],
                                   threshold=0.0, image_id=photo.stem, out_dir=tmp_path)
    names = [p.name for p in result.mask_paths]
    assert names == [f"{photo.stem}__segment_crack.png", f"{photo.stem}__segment_taping_area.png"]
    with Image.open(photo) as im, Image.open(result.mask_paths[0]) as mask:
        assert mask.size == im.size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) == {255}  # threshold 0: everything is covered
    assert [r[0] for r in result.rows] == ["segment crack", "segment taping area"]
    assert result.rows[0][1] == 100.0 and 0 < result.rows[0][2] <= 1
    assert result.overlay.size == result.photo.size and [c for _, c in result.legend][0] == "#d55e00"
    assert result.heatmap.height > result.photo.height * 0.5  # two labelled panels side by side


def test_status_markdown_reports_progress_and_errors():
    text = support.status_markdown({"phase": "training", "epoch": 2, "epochs": 5, "step": 3, "steps": 10,
                                    "eta_s": 125, "run_dir": "/x/run",
                                    "last_metrics": {"val_loss": 0.5,
                                                     "val": {"segment crack": {"miou": 0.41, "dice": 0.5}}}})
    assert "epoch 2/5" in text and "step 3/10" in text and "ETA 2 min 05 s" in text
    assert "segment crack: IoU 0.410" in text and "`/x/run`" in text
    assert "**Error:** boom" in support.status_markdown({"phase": "failed", "error": "boom"})
    assert "No training job" in support.status_markdown({"phase": "idle"})


def test_open_eval_set_picks_the_valid_split_and_limits(shared_data):
    ds = support.open_eval_set(shared_data / "cracks", ["segment crack"], limit=3)
    assert len(ds) == 3 and all(item.image_path.parent.parent.name == "valid" for item in ds.items)


def test_read_history_tolerates_a_cut_line(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "tra')
    assert support.read_history(tmp_path / "best") == [{"epoch": 1, "train_loss": 0.5}]
    assert support.read_history(tmp_path / "nothing") == []
