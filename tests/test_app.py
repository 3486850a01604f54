"""The app over HTTP: every named endpoint driven with gradio_client against a launched server, tiny models."""

import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENDPOINTS = ["/segment", "/train_start", "/train_status", "/train_stop", "/compare", "/export"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """The app on a free port with two tiny models in a temporary checkpoints/ (closed after the module)."""
    import app
    from engine.models import make_random_model_folder

    root = tmp_path_factory.mktemp("app")
    checkpoints = root / "checkpoints"
    tiny_a = make_random_model_folder(checkpoints / "tiny-a", meta={"threshold": 0.5})
    tiny_b = make_random_model_folder(checkpoints / "tiny-b", seed=1, meta={"threshold": 0.45})
    demo = app.build_app(checkpoints_dir=checkpoints, export_dir=root / "export", data_root=shared_data,
                         work_dir=root / "work", default_model=str(tiny_a),
                         train_overrides={"feature_cache": False, "warmup_epochs": 0, "threads": 1})
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **app.launch_options())
    from gradio_client import Client

    try:
        yield {"client": Client(url, verbose=False), "root": root, "tiny_a": str(tiny_a), "tiny_b": str(tiny_b)}
    finally:
        from engine.train import get_job

        get_job().stop()
        get_job().wait(30)
        demo.close()


def test_import_builds_nothing():
    """`import app` starts no server and loads no model (nor torch): that waits for build_app() and use."""
    import subprocess
    import sys

    code = ("import sys, gradio as gr, app; "
            "print(len(gr.Blocks.instances), 'torch' in sys.modules, 'engine.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["0", "False", "False"]


def test_named_endpoints_exist(served):
    api = served["client"].view_api(print_info=False, return_format="dict")
    named = api["named_endpoints"]
    for name in ENDPOINTS:
        assert name in named, f"{name} missing from {sorted(named)}"
    assert [p["parameter_name"] for p in named["/segment"]["parameters"]] == ["image", "prompts", "model", "threshold"]
    assert len(named["/segment"]["returns"]) == 3  # overlay, masks, table
    assert not any(k.startswith("/lambda") or k == "/poll" for k in named)


def test_segment_a_real_photo(served, shared_data):
    from gradio_client import handle_file

    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    overlay, masks, table = served["client"].predict(
        handle_file(str(photo)), "segment crack\nsegment taping area", served["tiny_a"], 0.5, api_name="/segment")
    names = sorted(Path(m).name for m in masks)
    assert names == [f"{photo.stem}__segment_crack.png", f"{photo.stem}__segment_taping_area.png"]
    with Image.open(photo) as im, Image.open(masks[0]) as mask, Image.open(overlay) as over:
        assert mask.size == im.size == over.size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert table["headers"] == ["prompt", "area %", "max score", "ms"]
    assert [row[0] for row in table["data"]] == ["segment crack", "segment taping area"]
    assert all(0 <= row[1] <= 100 and 0 <= row[2] <= 1 and row[3] > 0 for row in table["data"])


def test_errors_reach_the_user_with_the_fix(served, shared_data, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    with pytest.raises(AppError, match="No prompt given: type what to find"):
        served["client"].predict(handle_file(str(photo)), " , ", served["tiny_a"], 0.5, api_name="/segment")
    with pytest.raises(AppError, match="neither an existing folder nor a Hub id"):
        served["client"].predict(handle_file(str(photo)), "segment crack", "no/such/model/here", 0.5,
                                 api_name="/segment")
    with pytest.raises(AppError, match="No photo yet"):
        served["client"].predict(None, "segment crack", served["tiny_a"], 0.5, api_name="/segment")
    not_image = tmp_path / "notes.jpg"
    not_image.write_bytes(b"meeting notes, not a photo\n" * 20)
    with pytest.raises(AppError, match=r"^notes.jpg: not an image Pillow can read \(JPEG, PNG"):
        served["client"].predict(handle_file(str(not_image)), "segment crack", served["tiny_a"], 0.5,
                                 api_name="/segment")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:5000])
    with pytest.raises(AppError, match="^cut.jpg: image file is truncated.*copy it again"):
        served["client"].predict(handle_file(str(cut)), "segment crack", served["tiny_a"], 0.5, api_name="/segment")


def _train_args(served, **kw):
    args = dict(sets=["cracks"], cracks_prompts="segment crack, segment wall crack", joints_prompts="",
                zip_file=None, zip_prompts="", folder="", folder_prompts="", model=served["tiny_a"], run_name="",
                epochs=2, lr=1e-3, batch_size=2, image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False,
                patience=0, max_images=6)
    args.update(kw)
    return args


def _status(client) -> dict:
    return client.predict(api_name="/train_status")[2]


def _wait(client, done, timeout_s=150):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _status(client)
        if done(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"timed out; last status {status}")


def test_train_to_the_end(served):
    client = served["client"]
    msg = client.predict(**_train_args(served, run_name="tiny-run"), api_name="/train_start")
    run_dir = served["root"] / "checkpoints" / "tiny-run"
    assert str(run_dir) in msg
    status = _wait(client, lambda s: s["phase"] in ("finished", "stopped", "failed"))
    assert status["phase"] == "finished", status
    assert [row["epoch"] for row in status["history"]] == [1, 2]
    assert (run_dir / "best" / "config.json").is_file() and (run_dir / "metrics.jsonl").is_file()
    markdown, curves, _ = client.predict(api_name="/train_status")
    assert "Finished" in markdown and curves["type"] == "plotly"

    # The new run is a model like any other.
    from gradio_client import handle_file

    photo = Path(__file__).resolve().parents[1] / "examples" / "wall_01_crack.jpg"
    _, masks, _ = client.predict(handle_file(str(photo)), "segment crack", str(run_dir), 0.5, api_name="/segment")
    assert Path(masks[0]).name == "wall_01_crack__segment_crack.png"


def test_stop_a_run_mid_way(served):
    """A long run is stopped mid-epoch; a second start meanwhile is refused with the reason."""
    from gradio_client.exceptions import AppError

    client = served["client"]
    client.predict(**_train_args(served, run_name="long-run", epochs=100), api_name="/train_start")
    _wait(client, lambda s: s["phase"] == "training" and s["step"] >= 1 or s["phase"] in ("failed", "finished"))
    with pytest.raises(AppError, match="already running"):
        client.predict(**_train_args(served, run_name="third"), api_name="/train_start")
    assert "Stop requested" in client.predict(api_name="/train_stop")
    status = _wait(client, lambda s: s["phase"] in ("stopped", "finished", "failed"), timeout_s=60)
    assert status["phase"] == "stopped" and status["epoch"] < 100, status
    with pytest.raises(AppError, match="No training job is running"):
        client.predict(api_name="/train_stop")


def test_compare_two_models(served):
    scores, curves, gallery, worst = served["client"].predict(
        models=[served["tiny_a"], served["tiny_b"]], precisions=["fp32"], data_choice="cracks", folder="",
        zip_file=None, prompts="segment crack", limit=3, api_name="/compare")
    assert scores["headers"][:4] == ["model", "prompt", "n", "mIoU"]
    assert [r[:3] for r in scores["data"]] == [["tiny-a", "segment crack", 3], ["tiny-b", "segment crack", 3]]
    assert all(0 <= r[3] <= 1 and 0 <= r[4] <= 1 for r in scores["data"])
    assert len(gallery) == 3 and all(Path(g["image"]).is_file() for g in gallery)
    with Image.open(gallery[0]["image"]) as im:
        assert im.width > 2.5 * im.height  # ground truth + two models side by side
    assert {r[0] for r in worst["data"]} == {"tiny-a", "tiny-b"}
    assert curves["type"] == "plotly"


def test_compare_an_uploaded_zip(served, shared_data, tmp_path):
    from gradio_client import handle_file

    z = tmp_path / "mini.zip"
    valid = shared_data / "cracks" / "valid"
    with zipfile.ZipFile(z, "w") as zf:
        for img in sorted((valid / "images").glob("*.jpg"))[:2]:
            zf.write(img, f"mini/valid/images/{img.name}")
            zf.write(valid / "labels" / f"{img.stem}.txt", f"mini/valid/labels/{img.stem}.txt")
    scores, _, gallery, _ = served["client"].predict(
        models=[served["tiny_a"]], precisions=["fp32"], data_choice="zip", folder="", zip_file=handle_file(str(z)),
        prompts="segment crack", limit=0, api_name="/compare")
    assert scores["data"][0][2] == 2 and len(gallery) == 2


def test_export_fp32(served):
    table, report, zip_path = served["client"].predict(served["tiny_a"], "fp32", api_name="/export")
    rows = {r[0]: r[1] for r in table["data"]}
    assert float(rows["onnx fp32 vs torch: mask IoU"]) > 0.99
    assert "onnx fp32 ms / photo" in rows and "torch fp32 ms / photo (2 prompts)" in rows
    assert "parity on" in report
    out = served["root"] / "export" / "tiny-a-fp32"
    assert (out / "manifest.json").is_file()
    with zipfile.ZipFile(zip_path) as zf:
        assert "manifest.json" in zf.namelist() and any(n.endswith(".onnx") for n in zf.namelist())
    # The export is now a model for /segment too.
    from gradio_client import handle_file

    photo = Path(__file__).resolve().parents[1] / "examples" / "wall_02_taping.jpg"
    _, masks, _ = served["client"].predict(handle_file(str(photo)), "segment taping area", str(out), 0.5,
                                           api_name="/segment")
    assert Path(masks[0]).name == "wall_02_taping__segment_taping_area.png"
