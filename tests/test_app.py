"""app.py: the handlers called directly (no HTTP), then every named endpoint driven with gradio_client against a
launched server (slow), tiny models throughout."""

import inspect
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from engine.app.views import status_markdown
from engine.prompts import parse_prompts
from engine.train import get_job

from app_helpers import free_port

ENDPOINTS = ["/segment", "/segment_batch", "/train_start", "/train_status", "/train_stop", "/compare", "/export",
             "/download_run", "/push", "/label_save", "/label_sets", "/label_download", "/teach_start"]



@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """The app on a free port with two tiny models in a temporary checkpoints/ (closed after the module)."""
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
        yield {"client": Client(url, verbose=False), "url": url, "root": root, "tiny_a": str(tiny_a),
               "tiny_b": str(tiny_b)}
    finally:
        get_job().stop()
        get_job().wait(30)
        demo.close()


# ------------------------------------------------------------------------------------------ handlers, no HTTP


@pytest.fixture
def ctx(tmp_path, tiny_model_dir, shared_data):
    """The handlers' context over a temporary checkpoints/ (the tiny model is the default, not listed)."""
    return app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                            data_root=shared_data, work_dir=tmp_path / "work", default_model=str(tiny_model_dir))


def test_segment_handler_returns_overlay_table_and_masks(ctx, shared_data):
    photo = sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]
    overlay, masks, table, result = app.segment(ctx, {"path": str(photo), "orig_name": "IMG 7.jpg"},
                                                "segment crack, segment taping area", None, 0.5)
    assert [Path(m).name for m in masks] == ["IMG_7__segment_crack.png", "IMG_7__segment_taping_area.png"]
    assert all(Path(m).is_relative_to(ctx.work_dir / "masks") for m in masks)
    with Image.open(photo) as im, Image.open(masks[1]) as mask:
        assert mask.size == im.size and overlay.size == result.photo.size
    assert table["headers"] == ["prompt", "found", "area %", "presence", "max score", "pixel thr", "presence thr",
                                "ms", "count", "total length", "widest", "band", "area", "unit"]
    assert [row[0] for row in table["data"]] == ["segment crack", "segment taping area"]
    pair, heatmap, legend, shown, regions = app.show_views(result)
    assert pair == (result.photo, result.overlay) and heatmap is result.heatmap
    assert "segment taping area" in legend and "answered by" in legend
    assert "each prompt's own calibrated thresholds" in legend and "no scale: lengths and widths in pixels" in legend
    assert shown["headers"][:2] == ["prompt", "found"] and "max score" not in shown["headers"]
    assert [r[0] for r in shown["data"]] == ["segment crack", "segment taping area"]
    counts = {row[0]: row[shown["headers"].index("count")] for row in shown["data"]}
    assert [r[0] for r in regions["data"]] == ["segment crack"] * counts["segment crack"] + [
        "segment taping area"] * counts["segment taping area"]  # one row per numbered region
    assert app.show_views(None) == (gr.skip(),) * 5


def test_segment_handler_errors_name_the_upload(ctx, tmp_path):
    with pytest.raises(gr.Error, match="No photo yet"):
        app.segment(ctx, None, "segment crack", None, 0.5)
    not_image = tmp_path / "upload-cache-name.jpg"
    not_image.write_bytes(b"meeting notes, not a photo\n" * 20)
    with pytest.raises(gr.Error) as err:
        app.segment(ctx, {"path": str(not_image), "orig_name": "notes.jpg"}, "segment crack", None, 0.5)
    assert err.value.message.startswith("notes.jpg: not an image Pillow can read")


def test_the_prompt_box_accepts_lines_commas_and_picks():
    assert parse_prompts("segment crack, segment taping area\nsegment crack\n") == [
        "segment crack", "segment taping area"]
    assert parse_prompts("", ["segment crack"]) == ["segment crack"]
    with pytest.raises(ValueError, match="No prompt given"):
        parse_prompts(" ,\n ")
    assert app.add_prompt("segment crack\n", "segment crack") == "segment crack"  # a pick is added once


def test_small_handlers(ctx, tiny_model_dir):
    assert app.add_prompt("segment crack", "segment taping area") == "segment crack\nsegment taping area"
    assert app.add_prompt("  ", "segment crack") == "segment crack"
    assert app.model_threshold(ctx, str(tiny_model_dir)).value == 0.5
    pickers = app.refresh_pickers(ctx)
    assert len(pickers) == 4 and pickers[0].choices[0] == (f"{tiny_model_dir.name} (default)", str(tiny_model_dir))
    folder, upload = app.show_data_inputs("zip")
    assert folder.visible is False and upload.visible is True
    assert app.start_polling().active is True


def test_train_status_handler_renders_the_job_status(ctx):
    markdown, figure, status = app.train_status(ctx)
    assert markdown == status_markdown(get_job().status())
    assert status["phase"] == get_job().status().phase and isinstance(status["history"], list)
    assert figure.layout is not None


def test_train_handlers_refuse_without_starting_a_job(ctx):
    args = dict(sets=[], cracks_prompts="", joints_prompts="", zip_file=None, zip_prompts="", folder="",
                folder_prompts="", model="", run_name="", epochs=1, lr=1e-3, batch_size=2, image_size=64,
                unfreeze_vision=0, unfreeze_text=0, augment=False, patience=0, max_images=2)
    with pytest.raises(gr.Error, match="No training data chosen"):
        app.train_start(ctx, **args)
    with pytest.raises(gr.Error, match="letters, digits"):
        app.train_start(ctx, **{**args, "sets": ["cracks"], "run_name": "../up"})
    if not get_job().running:
        with pytest.raises(gr.Error, match="No training job is running"):
            app.train_stop(ctx)


def test_compare_handler_needs_a_zip_when_zip_is_chosen(ctx, tiny_model_dir):
    with pytest.raises(gr.Error, match="No zip uploaded"):
        app.compare(ctx, [str(tiny_model_dir)], ["fp32"], "zip", "", None, "", 3)
    with pytest.raises(gr.Error, match="No model chosen"):
        app.compare(ctx, [], ["fp32"], "cracks", "", None, "", 3)


# ------------------------------------------------------------------------------------------ over HTTP


@pytest.mark.slow
def test_import_builds_nothing():
    """`import app` starts no server and loads no model (nor torch): that waits for build_app() and use."""
    import subprocess
    import sys

    code = ("import sys, gradio as gr, app; "
            "print(len(gr.Blocks.instances), 'torch' in sys.modules, 'engine.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["0", "False", "False"]


@pytest.mark.slow
def test_named_endpoints_exist(served):
    api = served["client"].view_api(print_info=False, return_format="dict")
    named = api["named_endpoints"]
    for name in ENDPOINTS:
        assert name in named, f"{name} missing from {sorted(named)}"
    params = named["/segment"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["image", "prompts", "model", "threshold", "mm_per_px",
                                                    "photo_width_mm"]
    assert [p["parameter_has_default"] for p in params[-2:]] == [True, True]  # older four-argument calls still work
    assert len(named["/segment"]["returns"]) == 3  # overlay, masks, table
    assert not any(k.startswith("/lambda") or k == "/poll" for k in named)


@pytest.mark.slow
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
    assert table["headers"] == ["prompt", "found", "area %", "presence", "max score", "pixel thr", "presence thr",
                                "ms", "count", "total length", "widest", "band", "area", "unit"]
    assert [row[0] for row in table["data"]] == ["segment crack", "segment taping area"]
    # prompt, found, area %, presence, max score, pixel thr, presence thr, ms
    assert all((row[1] == "found" or row[1].startswith("not found: presence ")) and 0 <= row[2] <= 100
               and 0 <= row[3] <= 1 and 0 <= row[4] <= 1 and row[5] == 0.5 and 0 <= row[6] <= 1 and row[7] > 0
               for row in table["data"])


@pytest.mark.slow
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


@pytest.mark.slow
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

    # Trained in the app, kept as a zip: /download_run gives a Hugging Face folder that transformers loads.
    from transformers import CLIPSegForImageSegmentation

    zip_path = client.predict(str(run_dir), api_name="/download_run")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(served["root"] / "downloaded")
    folder = next(p.parent for p in (served["root"] / "downloaded").rglob("model.safetensors"))
    model = CLIPSegForImageSegmentation.from_pretrained(folder)
    assert model.config.vision_config.image_size == 64 and (folder / "README.md").is_file()


@pytest.mark.slow
def test_stop_a_run_mid_way(served):
    """A long run is stopped mid-epoch; a second start meanwhile is refused with the reason."""
    from gradio_client.exceptions import AppError

    client = served["client"]
    client.predict(**_train_args(served, run_name="long-run", epochs=100), api_name="/train_start")
    _wait(client, lambda s: s["phase"] == "training" and s["step"] >= 1 or s["phase"] in ("failed", "finished"))
    with pytest.raises(AppError, match="already running"):
        client.predict(**_train_args(served, run_name="third"), api_name="/train_start")
    # Another browser session (a second client) watches the job read-only and cannot stop it.
    from gradio_client import Client

    other = Client(served["url"], verbose=False)
    with pytest.raises(AppError, match="started by another visitor; only they can stop it"):
        other.predict(api_name="/train_stop")
    assert "Read-only" in other.predict(api_name="/train_status")[0]
    assert _status(client)["phase"] in ("training", "validating") and get_job().running
    assert "Stop requested" in client.predict(api_name="/train_stop")
    status = _wait(client, lambda s: s["phase"] in ("stopped", "finished", "failed"), timeout_s=60)
    assert status["phase"] == "stopped" and status["epoch"] < 100, status
    with pytest.raises(AppError, match="No training job is running"):
        client.predict(api_name="/train_stop")


@pytest.mark.slow
def test_runs_never_overwrite_a_folder(served):
    """Locally too: the bundled model's name and an existing run's name are refused, the model untouched."""
    from gradio_client.exceptions import AppError

    from engine.paths import STARTER_DIR

    before = {p: p.read_bytes() for p in sorted(STARTER_DIR.rglob("*")) if p.is_file()}
    with pytest.raises(AppError, match="'drywall-starter' is the bundled model and read-only"):
        served["client"].predict(**_train_args(served, run_name="drywall-starter"), api_name="/train_start")
    with pytest.raises(AppError, match="A run named 'tiny-b' already exists and runs are never overwritten"):
        served["client"].predict(**_train_args(served, run_name="tiny-b"), api_name="/train_start")
    assert {p: p.read_bytes() for p in sorted(STARTER_DIR.rglob("*")) if p.is_file()} == before
    assert not get_job().running


@pytest.mark.slow
def test_compare_two_models(served):
    scores, curves, gallery, worst = served["client"].predict(
        models=[served["tiny_a"], served["tiny_b"]], precisions=["fp32"], data_choice="cracks", folder="",
        zip_file=None, prompts="segment crack", limit=3, api_name="/compare")
    assert scores["headers"][:4] == ["model", "prompt", "n", "mIoU"]
    assert [r[:3] for r in scores["data"]] == [["tiny-a", "segment crack", 3], ["tiny-b", "segment crack", 3]]
    assert all(0 <= r[3] <= 1 and 0 <= r[4] <= 1 for r in scores["data"])
    # "segment crack" also ran on 3 joints photos, where cracks are not labelled: false alarms and presence AUROC
    fa, auc = scores["headers"].index("false alarms"), scores["headers"].index("presence AUROC")
    assert all(r[fa].endswith("% of 3") and 0 <= float(r[auc]) <= 1 for r in scores["data"])
    assert len(gallery) == 3 and all(Path(g["image"]).is_file() for g in gallery)
    with Image.open(gallery[0]["image"]) as im:
        assert im.width > 2.5 * im.height  # ground truth + two models side by side
    assert {r[0] for r in worst["data"]} == {"tiny-a", "tiny-b"}
    assert curves["type"] == "plotly"


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_every_named_endpoint_takes_its_handlers_parameters_by_name(tmp_path, shared_data):
    """The widgets are wired to handlers by the handlers' parameter names (`app.inputs_for`): each endpoint's API
    parameters are exactly its handler's, in order, and each is fed by the widget of that name."""
    demo = app.build_app(checkpoints_dir=tmp_path / "c", export_dir=tmp_path / "e", data_root=shared_data,
                         work_dir=tmp_path / "work")
    handlers = {"/segment": app.segment, "/segment_batch": app.segment_batch, "/train_start": app.train_start,
                "/train_status": app.train_status, "/train_stop": app.train_stop, "/compare": app.compare,
                "/export": app.export, "/download_run": app.download_run, "/push": app.push_to_hub,
                "/models": app.list_my_models, "/label_save": app.label_save, "/label_sets": app.label_sets,
                "/label_download": app.label_download, "/teach_start": app.teach_start,
                "/label_push": app.label_push}
    endpoints = demo.get_api_info()["named_endpoints"]
    assert sorted(endpoints) == sorted(handlers)
    skip = {"ctx", "request", "progress", "oauth_token"}
    for name, handler in handlers.items():
        expected = [p for p in inspect.signature(handler).parameters if p not in skip]
        assert [p["parameter_name"] for p in endpoints[name]["parameters"]] == expected, name
    labels = {p["parameter_name"]: p["label"] for p in endpoints["/train_start"]["parameters"]}
    assert labels["epochs"] == "Epochs" and labels["run_name"] == "Run name" and labels["model"] == "Start from"
    assert labels["unfreeze_text"] == "Text layers to unfreeze"
    assert labels["negative_rate"] == "Absent-concept negatives"


def test_the_scale_boxes_refuse_what_is_not_a_positive_number():
    assert app.scale_values(0, None) == (None, None) and app.scale_values(0.5, 0) == (0.5, None)
    assert app.scale_values("", 1200) == (None, 1200.0)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="give a positive number, or 0 for no scale"):
            app.scale_values(bad, 0)
