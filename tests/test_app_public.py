"""app.py in public mode, driven with gradio_client as a hostile visitor would, attack by attack:
each request below is refused with its reason, and nothing on the server is read, shown or overwritten."""

import hashlib
import json
import time
import zipfile

import gradio as gr
import pytest

import app
from engine.app.public import FOLDER_REFUSED, MODEL_REFUSED, Limits, PublicSettings
from engine.paths import STARTER_DIR
from engine.train import get_job

from app_helpers import free_port

pytestmark = pytest.mark.slow  # each test talks to a launched server

LIMITS = Limits(epochs=100, upload_mb=1)  # epochs: room for a run that is still going when a visitor stops it


@pytest.fixture(scope="module")
def public(tmp_path_factory, shared_data):
    """The app in public mode on a free port, a tiny model in a temporary checkpoints/, and two visitors."""
    from gradio_client import Client

    from engine.models import make_random_model_folder

    root = tmp_path_factory.mktemp("public")
    tiny = make_random_model_folder(root / "checkpoints" / "tiny-a", meta={"threshold": 0.5})
    settings = PublicSettings(enabled=True, limits=LIMITS)
    demo = app.build_app(checkpoints_dir=root / "checkpoints", export_dir=root / "export", data_root=shared_data,
                         work_dir=root / "work", default_model=str(tiny), public=settings,
                         train_overrides={"feature_cache": False, "warmup_epochs": 0, "threads": 1})
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                            **app.launch_options(settings))
    try:
        yield {"a": Client(url, verbose=False), "b": Client(url, verbose=False), "root": root, "tiny": str(tiny)}
    finally:
        get_job().stop()
        get_job().wait(30)
        demo.close()


def _refusal(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        call()
    return str(err.value)


def _train(client, **kw):
    args = dict(sets=["cracks"], cracks_prompts="segment crack", joints_prompts="", zip_file=None, zip_prompts="",
                folder="", folder_prompts="", model="run: tiny-a", run_name="", epochs=2, lr=1e-3, batch_size=2,
                image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False, patience=0, max_images=6)
    args.update(kw)
    return client.predict(**args, api_name="/train_start")


def _photo(shared_data):
    from gradio_client import handle_file

    return handle_file(str(sorted((shared_data / "cracks/valid/images").glob("*.jpg"))[0]))


def _snapshot(folder):
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_page_offers_no_server_folder_and_names_no_server_path(public, shared_data):
    config = public["a"].config
    text = json.dumps(config)
    assert str(public["root"]) not in text and str(shared_data) not in text
    labels = {c["props"].get("label"): c["props"] for c in config["components"] if "props" in c}
    assert labels["...or a folder on the server"]["visible"] is False
    assert "folder" not in [value for _, value in labels["Labelled set"]["choices"]]
    assert ["run: tiny-a", "run: tiny-a"] in labels["Model"]["choices"]


def test_the_bundled_model_and_existing_runs_are_never_overwritten(public):
    before = _snapshot(STARTER_DIR)
    assert before, "the bundled model is missing"
    assert "'drywall-starter' is the bundled model and read-only" in _refusal(
        lambda: _train(public["a"], run_name="drywall-starter"))
    assert _snapshot(STARTER_DIR) == before
    assert not (public["root"] / "checkpoints" / "drywall-starter").exists()


def test_server_folders_are_refused(public, shared_data):
    cracks = str(shared_data / "cracks")
    assert _refusal(lambda: _train(public["a"], folder=cracks, folder_prompts="segment crack")) == FOLDER_REFUSED
    for choice in ("folder", cracks):  # Gradio's own check of the radio's choices refuses them first
        assert "is not in the list of choices: ['cracks', 'joints', 'zip']" in _refusal(lambda: public["a"].predict(
            models=["run: tiny-a"], precisions=["fp32"], data_choice=choice, folder=cracks, zip_file=None,
            prompts="segment crack", limit=3, api_name="/compare"))
    ctx = app.make_context(checkpoints_dir=public["root"] / "checkpoints", data_root=shared_data,
                           work_dir=public["root"] / "direct", public=PublicSettings(enabled=True))
    with pytest.raises(gr.Error) as err:  # and the handler itself, called with any value
        app.compare(ctx, ["run: tiny-a"], ["fp32"], "folder", cracks, None, "segment crack", 3)
    assert err.value.message == FOLDER_REFUSED


def test_models_outside_the_list_get_one_message_without_a_path(public, shared_data):
    messages = {_refusal(lambda m=model: public["a"].predict(_photo(shared_data), "segment crack", m, 0.5,
                                                             api_name="/segment"))
                for model in ("/root", "/etc/passwd", "/proc/self", "someone/any-model", "../checkpoints/tiny-a")}
    messages.add(_refusal(lambda: public["a"].predict("/etc/passwd", "fp32", api_name="/export")))
    messages.add(_refusal(lambda: _train(public["a"], model="/root")))
    assert messages == {MODEL_REFUSED}
    # the listed model, by its picker value or its folder, is served
    _, masks, _ = public["a"].predict(_photo(shared_data), "segment crack", "run: tiny-a", 0.5, api_name="/segment")
    assert len(masks) == 1


def test_more_prompts_than_the_cap_are_refused(public, shared_data):
    prompts = "\n".join(f"segment thing {i}" for i in range(9))
    assert _refusal(lambda: public["a"].predict(_photo(shared_data), prompts, "run: tiny-a", 0.5,
                                                api_name="/segment")) == \
        "Prompts: at most 8 prompts per request on this public app (got 9)."


@pytest.mark.parametrize("change, message, cap", [
    (dict(epochs=101), "Epochs: at most 100 epochs", "100"),
    (dict(batch_size=64), "Batch size: at most 16 images per batch", "16"),
    (dict(image_size=704), "Image size: at most 352 px", "352"),
    (dict(unfreeze_vision=12, unfreeze_text=12), "Vision layers to unfreeze: at most 4 layers", "4"),
    (dict(max_images=0), "Images per set: 0 (all) is not available", "1"),
    (dict(max_images=1000), "Images per set: at most 200 images per set", "200"),
])
def test_training_settings_over_the_caps_are_refused(public, shared_data, change, message, cap):
    # Over HTTP the sliders' own range (which ends at the cap) refuses first; the handler refuses any caller.
    assert f"value {cap}" in _refusal(lambda: _train(public["a"], **change))
    ctx = app.make_context(checkpoints_dir=public["root"] / "checkpoints", data_root=shared_data,
                           work_dir=public["root"] / "direct", public=PublicSettings(enabled=True, limits=LIMITS))
    args = dict(sets=["cracks"], cracks_prompts="segment crack", joints_prompts="", zip_file=None, zip_prompts="",
                folder="", folder_prompts="", model="run: tiny-a", run_name="", epochs=2, lr=1e-3, batch_size=2,
                image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False, patience=0, max_images=6)
    with pytest.raises(gr.Error) as err:
        app.train_start(ctx, **{**args, **change})
    assert err.value.message.startswith(message)
    assert not get_job().running


def test_an_upload_over_max_file_size_is_refused(public, tmp_path):
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "big.zip"
    big.write_bytes(b"PK" + bytes(LIMITS.max_file_size))
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {LIMITS.max_file_size} bytes"):
        public["a"].predict(models=["run: tiny-a"], precisions=["fp32"], data_choice="zip", folder="",
                            zip_file=handle_file(str(big)), prompts="segment crack", limit=3, api_name="/compare")
    # The server refuses it too, whatever the client: a raw POST to the upload route.
    with big.open("rb") as f:
        response = httpx.post(f"{public['a'].src.rstrip('/')}/gradio_api/upload", files={"files": f}, timeout=60)
    assert response.status_code == 413, response.text


def test_errors_name_no_server_path(public, tmp_path):
    from gradio_client import handle_file

    empty = tmp_path / "walls.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("walls/readme.txt", "no photos here")
    message = _refusal(lambda: public["a"].predict(
        models=["run: tiny-a"], precisions=["fp32"], data_choice="zip", folder="", zip_file=handle_file(str(empty)),
        prompts="segment crack", limit=3, api_name="/compare"))
    assert message and str(public["root"]) not in message and "/tmp" not in message


def _status(client) -> dict:
    return client.predict(api_name="/train_status")


def test_only_the_session_that_started_a_job_can_stop_it(public):
    a, b = public["a"], public["b"]
    msg = _train(a, run_name="public-long", epochs=100)
    assert msg.startswith("Training started: run folder `public-long`")
    deadline = time.monotonic() + 120
    while _status(a)[2]["phase"] != "training" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "only they can stop it" in _refusal(lambda: b.predict(api_name="/train_stop"))
    markdown, _, status = _status(b)
    assert "Read-only: another visitor started this job" in markdown
    assert status["phase"] in ("training", "validating") and status["run_dir"] is None  # not theirs to know
    assert "public-long" not in markdown and status["history"] == [] and status["log"] == []
    assert get_job().running
    assert "Read-only" not in _status(a)[0]
    assert a.predict(api_name="/train_stop").startswith("Stop requested for `public-long`")
    assert get_job().wait(60) and get_job().status().phase == "stopped"
