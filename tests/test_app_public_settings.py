"""engine/app/public.py: public mode's settings (defaults, environment overrides) and its checks, no server."""

import dataclasses

import pytest

from engine.app.jobs import TrainRequest
from engine.app.public import (
    ANOTHER_VISITORS_JOB,
    FOLDER_REFUSED,
    MODEL_REFUSED,
    Limits,
    PublicSettings,
    allowed_models,
    check_compare,
    check_model,
    check_training,
    public_status,
    scrub_paths,
)
from engine.paths import REPO_ROOT
from engine.train.events import JobStatus


def test_public_defaults_fit_a_small_space():
    limits = Limits()
    assert (limits.prompts, limits.train_images, limits.epochs, limits.image_size, limits.unfreeze_layers,
            limits.batch_size, limits.train_minutes) == (8, 200, 20, 352, 4, 16, 30.0)
    assert limits.max_file_size == 100 * 1024 ** 2 and limits.disk_bytes == 5 * 1024 ** 3
    assert set(Limits.ENV) == {f.name for f in dataclasses.fields(Limits)}  # every cap has its variable
    settings = PublicSettings()
    assert not settings.enabled and settings.extra_models == ("CIDAS/clipseg-rd64-refined", "auto")


def test_public_mode_is_on_on_a_space_or_when_asked():
    assert not PublicSettings.from_env(environ={}).enabled
    assert PublicSettings.from_env(environ={"SPACE_ID": "someone/drywall-qa"}).enabled
    assert PublicSettings.from_env(force=True, environ={}).enabled
    assert PublicSettings.from_env(environ={"DQA_PUBLIC": "1"}).enabled


def test_environment_overrides_each_cap():
    env = {"DQA_MAX_PROMPTS": "3", "DQA_MAX_TRAIN_MINUTES": "2.5", "DQA_MAX_UPLOAD_MB": "7",
           "DQA_ALLOWED_MODELS": "CIDAS/clipseg-rd64-refined, auto, someone/other", "DQA_MAX_IMAGE_SIZE": " "}
    settings = PublicSettings.from_env(force=True, environ=env)
    assert settings.limits == Limits(prompts=3, train_minutes=2.5, upload_mb=7)
    assert settings.limits.max_file_size == 7 * 1024 ** 2
    assert settings.extra_models == ("CIDAS/clipseg-rd64-refined", "auto", "someone/other")
    with pytest.raises(ValueError, match=r"DQA_MAX_EPOCHS='many' is not a whole number.*default 20"):
        Limits.from_env({"DQA_MAX_EPOCHS": "many"})
    with pytest.raises(ValueError, match="DQA_MAX_BATCH_SIZE='0' must be positive"):
        Limits.from_env({"DQA_MAX_BATCH_SIZE": "0"})


def test_models_outside_the_list_get_one_message_that_names_nothing():
    allowed = allowed_models([("run: mine", "/srv/app/checkpoints/mine")], ("auto",))
    assert check_model("run: mine", allowed) == "/srv/app/checkpoints/mine"
    assert check_model("auto", allowed) == "auto"
    messages = set()
    for bad in ("/root", "/etc/passwd", "/proc/self", "someone/any-model", "../checkpoints", "", "mine",
                "/srv/app/checkpoints/mine"):  # a listed folder's own path too: it would confirm where the app is
        with pytest.raises(ValueError) as err:
            check_model(bad, allowed)
        messages.add(str(err.value))
    assert messages == {MODEL_REFUSED} and "/" not in MODEL_REFUSED


def test_scrub_paths_keeps_only_names():
    assert scrub_paths(f"{REPO_ROOT}/checkpoints/run-1 holds no model") == "checkpoints/run-1 holds no model"
    assert scrub_paths("/srv/data/walls/valid holds no labelled images", ["/srv/data"]) == \
        "walls/valid holds no labelled images"
    assert scrub_paths("No such file: '/etc/shadow'") == "No such file: 'shadow'"
    assert scrub_paths("in /srv/data", ["/srv/data"]) == "in the app's folder"
    text = "see https://huggingface.co/CIDAS/clipseg-rd64-refined for segment joint/tape"
    assert scrub_paths(text) == text


def _request(**kw):
    values = dict(model="auto", epochs=5, lr=1e-3, batch_size=8, image_size=224, max_images=50,
                  sets=["cracks"], set_prompts={"cracks": "segment crack"})
    values.update(kw)
    return TrainRequest(**values)


@pytest.mark.parametrize("change, message", [
    (dict(folder="/etc"), FOLDER_REFUSED),
    (dict(max_images=0), "Images per set: 0 (all) is not available on this public app; choose 1 to 200."),
    (dict(max_images=201), "Images per set: at most 200 images per set on this public app (got 201)."),
    (dict(epochs=21), "Epochs: at most 20 epochs on this public app (got 21)."),
    (dict(batch_size=64), "Batch size: at most 16 images per batch on this public app (got 64)."),
    (dict(image_size=704), "Image size: at most 352 px on this public app (got 704)."),
    (dict(unfreeze_vision_layers=12), "Vision layers to unfreeze: at most 4 layers on this public app (got 12)."),
    (dict(unfreeze_text_layers=5), "Text layers to unfreeze: at most 4 layers on this public app (got 5)."),
    (dict(zip_prompts=",".join(f"segment thing {i}" for i in range(9))),
     "Prompts: at most 8 prompts per set on this public app (got 9)."),
])
def test_training_over_a_cap_is_refused_naming_it(change, message):
    check_training(_request(), Limits())  # within every cap
    with pytest.raises(ValueError) as err:
        check_training(_request(**change), Limits())
    assert str(err.value) == message


def test_compare_caps():
    check_compare(2, "cracks", 20, Limits())
    check_compare(1, "zip", 50, Limits())
    for choice in ("folder", "/etc", "../cracks"):
        with pytest.raises(ValueError, match="Folders on the server are not available"):
            check_compare(1, choice, 5, Limits())
    with pytest.raises(ValueError, match=r"Models: at most 4 models per comparison .*\(got 5\)"):
        check_compare(5, "cracks", 5, Limits())
    with pytest.raises(ValueError, match="Images: 0 \\(all\\) is not available"):
        check_compare(1, "cracks", 0, Limits())
    with pytest.raises(ValueError, match="Images: at most 50 images per comparison"):
        check_compare(1, "cracks", 51, Limits())


def test_public_status_shows_the_run_by_name():
    status = JobStatus(phase="failed", run_dir="/srv/app/checkpoints/run-1", error="/srv/up/x/set.zip: no images",
                       message="/srv/up/x/set.zip: no images", log=["saved /srv/app/checkpoints/run-1/best"],
                       summary={"run_dir": "/srv/app/checkpoints/run-1", "best_epoch": 2})
    shown = public_status(status, ["/srv/app"])
    assert shown.run_dir == "run-1" and shown.error == shown.message == "set.zip: no images"
    assert shown.log == ["saved checkpoints/run-1/best"]
    assert shown.summary == {"run_dir": "checkpoints/run-1", "best_epoch": 2}
    assert status.run_dir == "/srv/app/checkpoints/run-1"  # the job's own status is untouched


def test_another_visitors_job_shows_only_how_far_it_is():
    status = JobStatus(phase="training", epoch=2, epochs=5, step=3, steps=10, eta_s=40.0, run_dir="/w/v/runs/x",
                       message="epoch 2/5", history=[{"epoch": 1, "val": {"segment crack": {"miou": 0.3}}}],
                       last_metrics={"epoch": 1}, log=["reading /w/v/uploads/secret-set"])
    shown = public_status(status, ["/w"], owned=False)
    assert (shown.phase, shown.epoch, shown.epochs, shown.step, shown.steps, shown.eta_s) == ("training", 2, 5, 3,
                                                                                            10, 40.0)
    assert shown.run_dir is None and shown.history == [] and shown.log == [] and shown.last_metrics is None
    assert shown.message == ANOTHER_VISITORS_JOB


def test_visitor_caps_are_named_settings():
    limits = Limits.from_env({"DQA_MAX_VISITOR_GB": "0.5", "DQA_VISITOR_IDLE_MIN": "10"})
    assert limits.visitor_bytes == 512 * 1024**2 and limits.visitor_idle_min == 10.0


def test_an_anonymous_visitors_folder_goes_when_their_tab_closes(tmp_path, tiny_model_dir, shared_data):
    """The page's unload event: an anonymous session's folder is deleted (nobody can reach it again); a signed-in
    user's stays, and so does another visitor's."""
    import gradio as gr

    import app

    ctx = app.make_context(checkpoints_dir=tmp_path / "c", export_dir=tmp_path / "e", data_root=shared_data,
                           work_dir=tmp_path / "work", default_model=str(tiny_model_dir),
                           public=PublicSettings(enabled=True))
    anonymous, other = gr.Request(session_hash="tab-1"), gr.Request(session_hash="tab-2")
    user = gr.Request(username="inspector", session_hash="tab-3")
    folders = {name: ctx.workspace(r).root for name, r in (("anon", anonymous), ("other", other), ("user", user))}
    for root in folders.values():
        (root / "runs" / "r").mkdir()
    app.forget_session(ctx, anonymous)
    app.forget_session(ctx, user)
    assert not folders["anon"].exists() and folders["other"].is_dir() and folders["user"].is_dir()
