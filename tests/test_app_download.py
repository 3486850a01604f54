"""engine/app/download.py and engine/models/package.py through app.py's /download_run: a tiny run trained for
real, downloaded as a zip, unzipped and loaded with `from_pretrained` and with the app's own loader."""

import json
import zipfile

import pytest

import app
from engine.app.public import MODEL_REFUSED, PublicSettings

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


@pytest.fixture
def trained(tiny_cfg, tmp_path):  # noqa: F811
    """A 2-epoch run of the tiny model on real photos, under tmp_path/checkpoints/tiny-run."""
    from engine.train.loop import train

    out = tmp_path / "checkpoints" / "tiny-run"
    train(tiny_cfg(out=str(out), epochs=2, threads=1), lambda e: None)
    return out


def _unzip(zip_path, dest):
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        archive.extractall(dest)
    return names


@pytest.mark.slow
def test_download_a_trained_run_and_load_it_everywhere(trained, tmp_path, shared_data, tiny_model_dir):
    from transformers import CLIPSegForImageSegmentation

    from engine.models import list_models, load_segmenter

    ctx = app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                           data_root=shared_data, work_dir=tmp_path / "work", default_model=str(tiny_model_dir))
    zip_path = app.download_run(ctx, str(trained))
    assert zip_path.startswith(str(ctx.work_dir / "exports"))  # where housekeeping prunes it
    names = _unzip(zip_path, tmp_path / "unzipped")
    assert {"tiny-run/config.json", "tiny-run/model.safetensors", "tiny-run/README.md", "tiny-run/metrics.jsonl",
            "tiny-run/training_config.json", "tiny-run/drywall_qa.json"} <= set(names)
    assert not any(n.endswith(".pt") for n in names)  # no optimizer state
    folder = tmp_path / "unzipped" / "tiny-run"
    model = CLIPSegForImageSegmentation.from_pretrained(folder)
    assert model.config.model_type == "clipseg"
    card = (folder / "README.md").read_text()
    assert "model-index" in card and "| cracks/valid | segment crack |" in card
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
    seg = load_segmenter(folder, threads=1)
    photo = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[0]
    assert seg.prediction(photo, ["segment crack"]).size == (640, 640)
    assert seg.threshold == json.loads((folder / "drywall_qa.json").read_text())["threshold"]

    # Unzipped into another app's checkpoints/, it is listed as a run and segments.
    _unzip(zip_path, tmp_path / "other" / "checkpoints")
    assert ("run: tiny-run", str(tmp_path / "other" / "checkpoints" / "tiny-run")) in list_models(
        tmp_path / "other" / "checkpoints", tmp_path / "other" / "export")

    # Public mode: a listed run by its picker label; anything else gets the one refusal; no server path shown.
    public = app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                              data_root=shared_data, work_dir=tmp_path / "work2", public=PublicSettings(enabled=True))
    assert app.download_run(public, "run: tiny-run").endswith("tiny-run.zip")
    for value in ("/etc", str(tmp_path)):
        with pytest.raises(app.gr.Error, match="not offered here") as info:
            app.download_run(public, value)
        assert str(info.value) == MODEL_REFUSED or MODEL_REFUSED in str(info.value)
    with pytest.raises(app.gr.Error, match="not a training run or model folder here") as info:
        app.download_run(public, "auto")
    assert str(tmp_path) not in str(info.value)


def test_download_needs_a_run(tmp_path, shared_data, tiny_model_dir):
    ctx = app.make_context(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                           data_root=shared_data, work_dir=tmp_path / "work", default_model=str(tiny_model_dir))
    with pytest.raises(app.gr.Error, match="No run chosen"):
        app.download_run(ctx, "")
    (tmp_path / "checkpoints" / "stopped-early").mkdir(parents=True)
    with pytest.raises(app.gr.Error, match="holds no saved model yet"):
        app.download_run(ctx, str(tmp_path / "checkpoints" / "stopped-early"))
