"""app.py in public mode, two visitors (two gradio_client sessions) against one launched app: what one visitor
makes is theirs (runs, exports, downloads), a refused request leaves no bytes behind, the disk clean-up never
deletes a tracked file, a shipped model or a live visitor's run, a saved model is what the next request gets,
and a stop in any phase leaves the run name free. Tiny random models throughout."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.app.public import MODEL_REFUSED, Limits
from engine.app.visitors import VISITORS_DIR
from engine.paths import REPO_ROOT, SHIPPED_MODELS
from engine.train import get_job

from app_helpers import launch_public

pytestmark = pytest.mark.slow  # each test talks to a launched server

TRAIN = dict(sets=["cracks"], cracks_prompts="segment crack", joints_prompts="", zip_file=None, zip_prompts="",
             folder="", folder_prompts="", model="run: tiny-a", run_name="", epochs=1, lr=1e-3, batch_size=2,
             image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False, patience=0, max_images=4)


@pytest.fixture(scope="module")
def space(tmp_path_factory, shared_data):
    """A public app (tiny model as `run: tiny-a`) and two visitors, a and b."""
    root = tmp_path_factory.mktemp("visitors")
    demo, url, Client = launch_public(root, shared_data, Limits(epochs=100, upload_mb=20))
    try:
        yield {"a": Client(url, verbose=False), "b": Client(url, verbose=False), "root": root, "url": url}
    finally:
        get_job().stop()
        get_job().wait(60)
        demo.close()


def _refusal(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        call()
    return str(err.value)


def _train(client, **kw) -> str:
    return client.predict(**{**TRAIN, **kw}, api_name="/train_start")


def _wait_job(timeout: float = 180) -> str:
    assert get_job().wait(timeout), "the training job did not end in time"
    return get_job().status().phase


def _photo(shared_data, k: int = 0):
    from gradio_client import handle_file

    return handle_file(str(sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[k]))


def _choices(client) -> list[str]:
    """The model values this visitor may pass (the pickers' values, as /models lists them)."""
    return client.predict(api_name="/models")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tracked() -> dict[str, str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    names = [n for n in out.stdout.decode().split("\0") if n]
    return {n: hashlib.sha256((REPO_ROOT / n).read_bytes()).hexdigest() for n in names if (REPO_ROOT / n).is_file()}


def _visitor_bytes(root: Path) -> int:
    folder = root / "work" / VISITORS_DIR
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".seen")


def _bin_zip(path: Path, entries: int, size: int) -> Path:
    """A zip of `entries` .bin files of `size` bytes, each deflating about 65x (under the zip-bomb ratio)."""
    rows = np.zeros((size // 1024, 1024), np.uint8)
    rows[:, :12] = np.random.default_rng(0).integers(0, 256, (rows.shape[0], 12))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(entries):
            zf.writestr(f"dump/part-{k:03d}.bin", rows.tobytes())
    return path


# --------------------------------------------------------------------------------------------- ownership


def test_a_visitors_run_and_export_are_theirs_alone(space, shared_data):
    """Visitor b trains a run named like the server's model and exports it: a's export of the server's model
    stays a's, b's run and export are listed, used and downloaded by b only."""
    a, b = space["a"], space["b"]
    table_a, _, _ = a.predict("run: tiny-a", "fp32", api_name="/export")
    a_exports = [Path(p) for p in (space["root"] / "work" / VISITORS_DIR).glob("*/onnx/tiny-a-fp32")]
    assert len(a_exports) == 1
    before = _digest(a_exports[0])
    assert _train(b, run_name="Tiny-A").startswith("Training started: run folder `Tiny-A`")
    assert _wait_job() == "finished"
    assert "my run: Tiny-A" in _choices(b) and "my run: Tiny-A" not in _choices(a)
    b.predict("my run: Tiny-A", "fp32", api_name="/export")
    assert _digest(a_exports[0]) == before  # b's export went to b's own folder
    assert "my export: Tiny-A-fp32" in _choices(b) and "my export: Tiny-A-fp32" not in _choices(a)
    assert "my export: tiny-a-fp32" in _choices(a)
    for call in (lambda: a.predict(_photo(shared_data), "segment crack", "my run: Tiny-A", 0.5, api_name="/segment"),
                 lambda: a.predict("my run: Tiny-A", api_name="/download_run"),
                 lambda: a.predict("my run: Tiny-A", "fp32", api_name="/export"),
                 lambda: a.predict("my export: Tiny-A-fp32", "fp32", api_name="/export")):
        assert _refusal(call) == MODEL_REFUSED
    _, masks, _ = b.predict(_photo(shared_data), "segment crack", "my run: Tiny-A", 0.5, api_name="/segment")
    assert len(masks) == 1


def test_nothing_handed_out_names_a_server_path(space):
    """The export's report rows and zip (manifest.json), and a downloaded run (card, training_config.json,
    summary, metrics) name models by their picker label, never by a server path."""
    b = space["b"]
    if "my run: Tiny-A" not in _choices(b):
        pytest.skip("needs the run of test_a_visitors_run_and_export_are_theirs_alone")
    secrets = [str(space["root"]), str(REPO_ROOT), "/tmp"]
    table, report, export_zip = b.predict("my run: Tiny-A", "fp32", api_name="/export")
    assert not any(s in json.dumps(table) + report for s in secrets)
    run_zip = b.predict("my run: Tiny-A", api_name="/download_run")
    for path in (export_zip, run_zip):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith((".json", ".jsonl", ".md", ".txt")):
                    text = zf.read(name).decode()
                    assert not any(s in text for s in secrets), (Path(path).name, name)
    with zipfile.ZipFile(export_zip) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["source"] == manifest["source_path"] == "my run: Tiny-A"
    with zipfile.ZipFile(run_zip) as zf:
        config = json.loads(zf.read("Tiny-A/training_config.json"))
    assert config["out"] == "Tiny-A" and config["data"][0]["path"].endswith("cracks")


def test_a_listed_models_folder_path_is_refused_like_any_other(space, shared_data):
    a = space["a"]
    tiny = str(space["root"] / "checkpoints" / "tiny-a")
    assert _refusal(lambda: a.predict(_photo(shared_data), "segment crack", tiny, 0.5,
                                      api_name="/segment")) == MODEL_REFUSED
    _, masks, _ = a.predict(_photo(shared_data), "segment crack", "run: tiny-a", 0.5, api_name="/segment")
    assert len(masks) == 1


def test_archive_advice_fits_public_mode(space, tmp_path):
    """A zip over the entry limit gets advice that works here (no 'folder on the server')."""
    from gradio_client import handle_file

    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for k in range(3):
            zf.writestr(f"p/{k}.jpg", b"")
        for k in range(200):  # batches take at most 4 x 20 + 100 entries
            zf.writestr(f"p/{k}.txt", b"")
    message = _refusal(lambda: space["a"].predict([handle_file(str(z))], "segment crack", "run: tiny-a", 0.5,
                                                  api_name="/segment_batch"))
    assert "entries, over the limit" in message and "folder on the server" not in message


# ------------------------------------------------------------------------------------------------ disk


def test_refused_archives_leave_no_bytes_behind(space, tmp_path):
    from gradio_client import handle_file

    z = _bin_zip(tmp_path / "junk.zip", entries=12, size=2 * 1024**2)  # 24 MB of .bin, about 65x
    before = _visitor_bytes(space["root"])
    for _ in range(3):
        message = _refusal(lambda: space["b"].predict([handle_file(str(z))], "segment crack", "run: tiny-a", 0.5,
                                                      api_name="/segment_batch"))
        assert "holds no photos" in message
    assert _visitor_bytes(space["root"]) == before


def test_a_stale_model_is_never_served(space, shared_data):
    """b's run saved again after b first used it (a new best): the next request gets the new weights."""
    import shutil

    from engine.models import load_segmenter, make_random_model_folder

    b = space["b"]
    if "my run: Tiny-A" not in _choices(b):
        pytest.skip("needs the run of test_a_visitors_run_and_export_are_theirs_alone")
    run = next((space["root"] / "work" / VISITORS_DIR).glob("*/runs/Tiny-A"))
    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    first = b.predict(_photo(shared_data), "segment crack", "my run: Tiny-A", 0.5, api_name="/segment")[2]
    new = make_random_model_folder(space["root"] / "new-best", seed=11, meta={"threshold": 0.5})
    shutil.rmtree(run / "best")
    shutil.copytree(new, run / "best")
    second = b.predict(_photo(shared_data), "segment crack", "my run: Tiny-A", 0.5, api_name="/segment")[2]
    expected = float(load_segmenter(new, precision="fp32").predict(Image.open(photo).convert("RGB"),
                                                                   ["segment crack"])["segment crack"].max())
    assert second["data"][0][4] == pytest.approx(expected, abs=2e-3)
    assert second["data"][0][4] != first["data"][0][4]


def test_the_disk_cap_spares_tracked_files_shipped_models_and_live_visitors(tmp_path_factory, shared_data,
                                                                            tmp_path):
    """With a disk cap far below what a visitor sends, visitor b's archives and batches are refused or pruned,
    and nothing else goes: every tracked file, the shipped models, the default model and a's run stay."""
    from gradio_client import handle_file

    root = tmp_path_factory.mktemp("small-disk")
    demo, url, Client = launch_public(root, shared_data, Limits(disk_gb=3 / 1024, visitor_gb=2 / 1024, epochs=5))
    try:
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        tracked, shipped = _tracked(), {str(p): _digest(p) for p in SHIPPED_MODELS}
        assert _train(a, run_name="keep-me").startswith("Training started")
        assert _wait_job() == "finished"
        run = next((root / "work" / VISITORS_DIR).glob("*/runs/keep-me"))
        kept = _digest(run)
        junk = _bin_zip(tmp_path / "junk.zip", entries=8, size=2 * 1024**2)
        photos = [_photo(shared_data, k) for k in range(6)]
        for _ in range(3):
            _refusal(lambda: b.predict([handle_file(str(junk))], "segment crack", "run: tiny-a", 0.5,
                                       api_name="/segment_batch"))
            try:  # a real batch writes masks and a report; past b's budget it is refused, never another's files
                b.predict(photos, "segment crack", "run: tiny-a", 0.5, api_name="/segment_batch")
            except Exception as exc:  # noqa: BLE001 (gradio_client's AppError): the refusal names the budget
                assert "DQA_MAX_VISITOR_GB" in str(exc) or "DQA_MAX_DISK_GB" in str(exc), exc
        assert _digest(run) == kept and _tracked() == tracked
        assert {str(p): _digest(p) for p in SHIPPED_MODELS} == shipped
        assert (root / "checkpoints" / "tiny-a" / "config.json").is_file()
        b_bytes = sum(p.stat().st_size for p in (root / "work" / VISITORS_DIR).rglob("*")
                      if p.is_file() and not p.is_relative_to(run.parents[1]))
        assert b_bytes <= 2 * 1024**2 + 64 * 1024  # b's budget (plus the report of the refused request's check)
    finally:
        get_job().stop()
        get_job().wait(60)
        demo.close()


# ------------------------------------------------------------------------------------------------ queue


def test_a_long_batch_does_not_hold_a_single_photo(space, shared_data, tmp_path):
    """b's 20-photo batch of 16 MP float TIFFs (each a second or so to decode and write) is still running when
    a's single photo comes back: batches queue apart from single photos."""
    from gradio_client import handle_file

    rows = (np.arange(4000, dtype=np.float32) % 97 / 97.0)[:, None]
    big = tmp_path / "wall-16mp.tif"  # 0.1 MB on the wire: rows of one value deflate to nothing
    Image.fromarray(np.repeat(rows, 4000, axis=1), "F").save(big, compression="tiff_deflate")
    photos = [handle_file(str(big)) for _ in range(20)]
    job = space["b"].submit(photos, "\n".join(f"segment thing {k}" for k in range(8)), "run: tiny-a", 0.5,
                            api_name="/segment_batch")
    deadline = time.monotonic() + 60
    running = ("PROCESSING", "PROGRESS")  # PROGRESS: the batch reports its photos as it goes
    while job.status().code.name not in (*running, "FINISHED") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status().code.name in running
    _, masks, _ = space["a"].predict(_photo(shared_data), "segment crack", "run: tiny-a", 0.5, api_name="/segment")
    assert len(masks) == 1
    assert job.status().code.name in running, "the batch ended first: the single photo waited for it"
    job.result(timeout=300)


# ------------------------------------------------------------------------------------------------ stop


def test_a_time_cap_during_preparation_stops_and_frees_the_name(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("stop")
    demo, url, Client = launch_public(root, shared_data, Limits(train_minutes=0.001), feature_cache=True)
    try:
        a = Client(url, verbose=False)
        assert _train(a, run_name="cut-short", max_images=40).startswith("Training started")
        assert _wait_job() == "stopped"
        markdown, _, status = a.predict(api_name="/train_status")
        assert status["phase"] == "stopped" and not status["error"] and status["message"]
        assert not list((root / "work" / VISITORS_DIR).glob("*/runs/cut-short"))
        assert _train(a, run_name="cut-short").startswith("Training started")  # the name is free again
        _wait_job()
    finally:
        get_job().stop()
        get_job().wait(60)
        demo.close()


# ------------------------------------------------------------------------------------------------ start-up


def test_a_space_without_oauth_starts_without_sign_in(tmp_path, shared_data):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_", "OPENID_", "HF_TOKEN"))}
    env.update(SPACE_ID="someone/drywall-qa", HF_TOKEN="hf_from_the_space", GRADIO_ANALYTICS_ENABLED="False",
               TMPDIR=str(tmp_path))
    code = ("import logging, app; logging.basicConfig(level=logging.INFO); "
            f"demo = app.build_app(checkpoints_dir={str(tmp_path / 'c')!r}, export_dir={str(tmp_path / 'e')!r}, "
            f"data_root={str(shared_data)!r}); "
            "demo.launch(prevent_thread_lock=True, quiet=True); "
            "print('BUTTONS', [c.get('type') for c in demo.config['components'] if c.get('type') == 'loginbutton']); "
            "print('TOKEN', app.push_token(True)); demo.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BUTTONS []" in out.stdout and "TOKEN hf_from_the_space" in out.stdout
    assert "Push uses HF_TOKEN from the environment" in out.stderr


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()
