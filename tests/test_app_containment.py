"""What the app contains, through its API (gradio_client against a launched app, local mode: these hold in
every mode): uploads stay inside their folder and are deleted when refused, runs that never saved are not
offered, and Compare's gallery images stay small. Tiny random models throughout."""

import io
import json
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from engine.app.compare import MAX_GALLERY_SIDE
from engine.train import get_job

from app_helpers import free_port

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """The app with three tiny models and a run killed before its first save, in a temporary checkpoints/."""
    from gradio_client import Client

    from engine.models import make_random_model_folder

    root = tmp_path_factory.mktemp("contain")
    checkpoints = root / "checkpoints"
    models = [str(make_random_model_folder(checkpoints / f"tiny-{k}", seed=k)) for k in range(3)]
    never = checkpoints / "killed-early"  # config.json (its TrainConfig) and metrics, no best/ or last/
    never.mkdir()
    (never / "config.json").write_text(json.dumps({"epochs": 5, "model": "auto"}))
    (never / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.7}\n')
    secret = root / "secret" / "private.png"  # a photo outside every upload
    secret.parent.mkdir()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(secret)
    demo = app.build_app(checkpoints_dir=checkpoints, export_dir=root / "export", data_root=shared_data,
                         work_dir=root / "work", default_model=models[0],
                         train_overrides={"feature_cache": False, "warmup_epochs": 0, "threads": 1})
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **app.launch_options())
    try:
        yield {"client": Client(url, verbose=False), "url": url, "root": root, "models": models, "secret": secret,
               "uploads": root / "work" / "uploads"}
    finally:
        get_job().stop()
        get_job().wait(30)
        demo.close()


def _png(size=(64, 48), colour=(90, 90, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _compare(served, zip_path: Path, models=None, limit=0):
    from gradio_client import handle_file

    return served["client"].predict(
        models=models or served["models"][:1], precisions=["fp32"], data_choice="zip", folder="",
        zip_file=handle_file(str(zip_path)), prompts="segment crack", limit=limit, api_name="/compare")


def _train(served, zip_path: Path):
    from gradio_client import handle_file

    return served["client"].predict(
        sets=[], cracks_prompts="", joints_prompts="", zip_file=handle_file(str(zip_path)),
        zip_prompts="segment crack", folder="", folder_prompts="", model=served["models"][0], run_name="",
        epochs=1, lr=1e-3, batch_size=2, image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False,
        patience=0, max_images=2, api_name="/train_start")


def _uploads(served) -> list[str]:
    folder = served["uploads"]
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("file_name", ["../../secret/private.png", "{secret}"])
def test_a_coco_zip_naming_files_outside_is_refused(served, tmp_path, file_name):
    from gradio_client.exceptions import AppError

    file_name = file_name.format(secret=served["secret"])  # relative climb, or the absolute path itself
    coco = {"images": [{"id": 0, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 1, "file_name": file_name, "width": 64, "height": 48}],
            "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [8, 8, 20, 20]} for k in (0, 1)],
            "categories": [{"id": 1, "name": "crack"}]}
    z = _zip(tmp_path / "walls.zip", {"walls/valid/_annotations.coco.json": json.dumps(coco).encode(),
                                      "walls/valid/a.png": _png()})
    for call in (_compare, _train):
        with pytest.raises(AppError) as err:
            call(served, z)
        message = str(err.value)
        assert "The uploaded zip walls.zip is not a usable labelled set" in message
        assert "points outside the folder of _annotations.coco.json" in message and "images[1]" in message
        assert str(served["root"] / "work") not in message  # names the entry (as sent), not the upload's folder
        assert _uploads(served) == []  # the extracted copy went at once
    assert not get_job().running  # no job was started for it (an earlier test's may have finished)


def test_a_79x_zip_without_a_layout_is_refused_and_nothing_kept(served, tmp_path):
    from gradio_client.exceptions import AppError

    rows = np.zeros((12 * 1024, 1024), np.uint8)  # 12 MB deflating ~79x: under the 100x zip-bomb limit
    rows[:, :8] = np.random.default_rng(0).integers(0, 256, (rows.shape[0], 8))
    z = _zip(tmp_path / "blob.zip", {"dump/blob.bin": rows.tobytes(), "dump/readme.txt": b"not a data set"})
    assert 50 < rows.nbytes / z.stat().st_size < 100
    for call in (_compare, _train):
        with pytest.raises(AppError, match="The uploaded zip blob.zip holds no labelled set"):
            call(served, z)
        assert _uploads(served) == []


def test_a_zip_with_unreadable_labels_is_deleted_after_extraction(served, tmp_path):
    from gradio_client.exceptions import AppError

    z = _zip(tmp_path / "broken.zip", {"set/valid/images/a.png": _png(), "set/valid/labels/a.txt": b"0 0.5 oops\n"})
    for call in (_compare, _train):  # its only label is unreadable: no usable image, whoever reads it
        with pytest.raises(AppError, match=r"broken.zip is not a usable labelled set: set/valid: no usable "
                                           r"labelled images; first skipped: .*line 1: non-numeric value 'oops'"):
            call(served, z)
        assert _uploads(served) == []


def test_runs_that_never_saved_are_not_offered(served):
    config = httpx.get(served["url"].rstrip("/") + "/config", timeout=30).json()
    pickers = [c["props"] for c in config["components"] if c.get("type") == "dropdown"
               and c["props"].get("label") in ("Model", "Start from", "Models or runs")]
    assert len(pickers) == 4
    for props in pickers:
        values = [choice[1] for choice in props["choices"]]
        assert not any("killed-early" in str(v) for v in values)
    assert any(v.endswith("tiny-1") for v in (c[1] for c in pickers[0]["choices"]))


def test_compare_three_models_on_wide_photos_returns_small_gallery_images(served, tmp_path):
    label = b"0 0.4 0.5 0.2 0.6\n"
    z = _zip(tmp_path / "wide.zip", {"wide/valid/images/a.png": _png((6000, 800), (120, 100, 90)),
                                     "wide/valid/labels/a.txt": label,
                                     "wide/valid/images/b.png": _png((6000, 800), (60, 60, 60)),
                                     "wide/valid/labels/b.txt": label})
    scores, _, gallery, _ = _compare(served, z, models=served["models"])
    assert [r[0] for r in scores["data"]] == ["tiny-0", "tiny-1", "tiny-2"]
    assert len(gallery) == 2
    for item in gallery:
        with Image.open(item["image"]) as im:
            assert max(im.size) <= MAX_GALLERY_SIDE and im.width > 1200  # was 24,040 px wide
    assert _uploads(served) == []  # the extracted copy is deleted once scored
