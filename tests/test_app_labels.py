"""Correct, keep, teach through the app's API (gradio_client against a launched public app, two visitors):
/label_save keeps a mask pixel for pixel and an absent mark as an empty mask, /label_download gives a zip that
`open_dataset` and training read, each visitor sees only their own sets, caps refuse before writing, and
/teach_start trains on a set from the model the visitor uses."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from engine.app.labels import editor_value, mask_from_editor, suggest
from engine.app.public import Limits
from engine.data import open_dataset
from engine.data.labelset import label_set_splits
from engine.synth import make_wall
from engine.train import get_job

from app_helpers import launch_public

pytestmark = pytest.mark.slow  # talks to a launched server


@pytest.fixture(scope="module")
def space(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("labels")
    demo, url, Client = launch_public(root, shared_data, Limits(set_photos=3, label_sets=2), epochs=1, batch_size=4)
    photos = []
    for seed in (1, 2, 3, 4):
        image, masks = make_wall(seed, (80, 64), cracks=1, joints=0)
        path = root / f"wall_{seed}.png"
        image.save(path)
        photos.append((path, masks["crack"]))
    try:
        yield {"a": Client(url, verbose=False), "b": Client(url, verbose=False), "root": root, "photos": photos}
    finally:
        get_job().stop()
        get_job().wait(60)
        demo.close()


def _mask_png(mask: np.ndarray, path: Path) -> Path:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def _refusal(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        call()
    return str(err.value)


def test_a_kept_mask_comes_back_pixel_for_pixel_and_an_absent_mark_as_a_negative(space, tmp_path):
    from gradio_client import handle_file

    from engine.train.sampling import open_sets
    from engine.train.teach import teach_config

    a = space["a"]
    (p1, m1), (p2, _) = space["photos"][:2]
    mask = np.zeros_like(m1)
    mask[10:30, 5:60] = True  # known pixels, not the model's answer
    note = a.predict(handle_file(str(p1)), "segment crack", handle_file(str(_mask_png(mask, tmp_path / "m.png"))),
                     "walls", api_name="/label_save")
    assert note == "walls: 1 photo; segment crack 1"
    note = a.predict(handle_file(str(p2)), "segment crack", None, "walls", api_name="/label_save")
    assert note == "walls: 2 photos; segment crack 2 (1 absent)"
    assert str(space["root"]) not in note

    listed = a.predict(api_name="/label_sets")
    assert listed["data"] == [["walls", 2, "segment crack: 2 (1 absent)"]]
    zip_path = a.predict("walls", "masks", api_name="/label_download")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "out")
        manifest = json.loads(archive.read("walls/labelset.json"))
    assert all(str(space["root"]) not in json.dumps(e) for e in manifest["items"])
    [(folder, prompt)] = label_set_splits(tmp_path / "out" / "walls")
    ds = open_dataset(folder, prompts=[prompt])
    masks = {ds.items[i].image_id: ds.mask(i) for i in range(len(ds))}
    assert sorted(masks) == sorted(f"wall-{n}-{_digest(p)}" for n, p in ((1, p1), (2, p2)))
    assert np.array_equal(masks[f"wall-1-{_digest(p1)}"], mask)  # pixel for pixel
    assert not masks[f"wall-2-{_digest(p2)}"].any()  # the absent mark

    # the Train tab's zip upload takes the downloaded set as it is, under its own prompt
    train = dict(sets=[], cracks_prompts="", joints_prompts="", zip_file=handle_file(zip_path), zip_prompts="",
                 folder="", folder_prompts="", model="run: tiny-a", run_name="from-zip", epochs=1, lr=1e-3,
                 batch_size=2, image_size=64, unfreeze_vision=0, unfreeze_text=0, augment=False, patience=0,
                 max_images=4)
    assert "from-zip" in a.predict(**train, api_name="/train_start")
    assert get_job().wait(120) and get_job().status().phase == "finished", get_job().status().error
    assert "segment crack" in json.dumps(get_job().status().summary["best"]["val"])

    # training reads the set: the absent photo is a training item whose target is empty (a negative)
    sets = open_sets(teach_config([tmp_path / "out" / "walls"], model=str(space["root"] / "checkpoints" / "tiny-a"),
                                  out=str(tmp_path / "run"), replay=0))
    [labelled] = sets
    assert labelled.prompts == ("segment crack",) and not labelled.spec.negatives
    assert labelled.spec.val_split == "train"  # too few photos to hold any out: scored on training photos
    train_masks = [labelled.train.mask(i) for i in range(len(labelled.train))]
    assert sorted(int(m.sum()) for m in train_masks) == [0, int(mask.sum())]


def test_sets_are_the_visitors_own_and_capped(space, tmp_path):
    from gradio_client import handle_file

    b = space["b"]
    (p1, m1), (p2, m2), (p3, m3), (p4, m4) = space["photos"]
    b.predict(handle_file(str(p1)), "segment crack", handle_file(str(_mask_png(m1, tmp_path / "1.png"))), "mine",
              api_name="/label_save")
    assert [row[0] for row in b.predict(api_name="/label_sets")["data"]] == ["mine"]
    assert "walls" not in json.dumps(b.predict(api_name="/label_sets"))
    assert "no label set named 'walls'" in _refusal(lambda: b.predict("walls", "masks", api_name="/label_download"))
    for path, mask in ((p2, m2), (p3, m3)):
        b.predict(handle_file(str(path)), "segment crack", handle_file(str(_mask_png(mask, tmp_path / "x.png"))),
                  "mine", api_name="/label_save")
    message = _refusal(lambda: b.predict(handle_file(str(p4)), "segment crack", None, "mine", api_name="/label_save"))
    assert "DQA_MAX_SET_PHOTOS" in message and str(space["root"]) not in message
    b.predict(handle_file(str(p4)), "segment crack", None, "second", api_name="/label_save")
    message = _refusal(lambda: b.predict(handle_file(str(p4)), "segment crack", None, "third",
                                         api_name="/label_save"))
    assert "DQA_MAX_SETS" in message
    assert "Set name" in _refusal(lambda: b.predict(handle_file(str(p4)), "segment crack", None, "../a",
                                                    api_name="/label_save"))
    for kind in ("coco", "coco-polygons", "yolo"):
        with zipfile.ZipFile(b.predict("mine", kind, api_name="/label_download")) as archive:
            assert any(n.endswith((".json", ".yaml")) for n in archive.namelist())


def test_teach_trains_a_run_the_visitor_can_pick(space, tmp_path):
    from gradio_client import handle_file

    a = space["a"]
    for path, mask in space["photos"][:3]:
        a.predict(handle_file(str(path)), "segment water stain", handle_file(str(_mask_png(mask, tmp_path / "m.png"))),
                  "stains", api_name="/label_save")
    message = a.predict(["stains"], "run: tiny-a", api_name="/teach_start")
    assert message.startswith("Teaching started: run `stains-") and str(space["root"]) not in message
    assert get_job().wait(240), "the teach run did not end in time"
    status = get_job().status()
    assert status.phase == "finished", status.error
    models = a.predict(api_name="/models")
    assert any(label.startswith("my run: stains-") for label in models)
    assert not any(label.startswith("my run: stains-") for label in space["b"].predict(api_name="/models"))


def test_an_untouched_editor_keeps_the_model_mask_and_strokes_change_only_their_pixels(tmp_path):
    from engine.app.labels import EDITOR_CANVAS

    class Result:  # what the editor reads of a SegmentResult: the photo shown, the full size, the mask files
        photo = Image.new("RGB", (50, 40))
        size = (100, 80)
        mask_paths: list = []

    full = np.zeros((80, 100), bool)
    full[20:41, 31:70] = True  # odd edges: the canvas's scale (7.5 px per pixel here) cannot hold them exactly
    result = Result()
    value = editor_value(None, None, result.photo)
    assert value["background"].size == EDITOR_CANVAS == value["layers"][0].size  # one size: drawn at one scale
    assert not np.asarray(value["layers"][0])[..., 3].any()  # an empty layer to label from scratch

    path = tmp_path / "photo__segment_crack.png"
    Image.fromarray(full.astype(np.uint8) * 255).save(path)
    result.mask_paths = [path]
    value = editor_value(result, "segment crack")
    layer = np.asarray(value["layers"][0]).copy()
    assert (layer[..., 3] > 0).sum() > 0
    editor = {"background": np.asarray(value["background"]), "layers": [layer]}
    kept, corrected = mask_from_editor(editor, result, "segment crack", (100, 80))
    assert not corrected and np.array_equal(kept, full)  # pixel for pixel, not the canvas's copy
    # the 100 x 80 photo fills 750 x 600 of the canvas from x = 25: full pixel (r, c) is canvas (7.5 r, 25 + 7.5 c)
    layer[0:75, 25:100] = (255, 0, 0, 200)  # a stroke over full pixels [0:10, 0:10]
    layer[180:270, 325:475, 3] = 0  # and an eraser over [24:36, 40:60], inside the mask
    changed, corrected = mask_from_editor({"background": editor["background"], "layers": [layer]}, result,
                                          "segment crack", (100, 80))
    assert corrected and changed[0:10, 0:10].all() and not changed[24:36, 40:60].any()
    untouched = np.ones_like(full)
    untouched[0:10, 0:10] = False
    untouched[24:36, 40:60] = False
    assert np.array_equal(changed[untouched], full[untouched])


def test_the_least_certain_answers_come_first():
    rows = [["a.jpg", "segment crack", "found", 1.0, 0.99, 0.99, 0.5, 0.5],
            ["b.jpg", "segment crack", "not found", 0.0, 0.48, 0.5, 0.5, 0.5],
            ["c.jpg", "segment crack", "found", 2.0, 0.7, 0.8, 0.5, 0.5]]
    assert [r[0] for r in suggest(rows)] == ["b.jpg", "c.jpg", "a.jpg"]
    assert suggest(rows)[0][5] == 0.02


def test_a_file_named_by_its_server_path_is_never_read(space, tmp_path):
    """A request's FileData may name any path; Gradio reads only uploads (preprocess, or not, as /label_save and
    /segment are wired). Sent as raw HTTP: gradio_client would upload a local file first."""
    import httpx

    secret = tmp_path / "someone_elses_photo.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(secret)
    raw = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
    base = space["a"].src.rstrip("/") + "/gradio_api/call/"
    for name, data in (("label_save", [raw, "segment crack", None, "stolen"]),
                       ("segment", [raw, "segment crack", "", 0.5, 0, 0]),
                       ("segment_batch", [[raw], "segment crack", "", 0.5, 0, 0])):
        event = httpx.post(base + name, json={"data": data}, timeout=30).json()["event_id"]
        stream = httpx.get(f"{base}{name}/{event}", timeout=120).text
        assert stream.startswith("event: error"), (name, stream[:200])
    assert "stolen" not in json.dumps(space["a"].predict(api_name="/label_sets"))
    assert not list(Path(space["root"], "work").rglob("*stolen*"))


def test_a_mask_is_never_kept_against_another_photos_answer(tmp_path):
    """The editor opened on photo a, then photo b was segmented: saving must not mix a's strokes with b's mask."""
    ctx = app.make_context(checkpoints_dir=tmp_path / "c", export_dir=tmp_path / "e", data_root=tmp_path / "d",
                           work_dir=tmp_path / "work")

    class Answer:
        source_path = str(tmp_path / "b.png")

    loaded = {"photo": str(tmp_path / "a.png"), "prompt": "segment crack", "from_model": True, "model": ""}
    with pytest.raises(app.gr.Error, match="Another photo was segmented"):
        app.label_keep(ctx, {"background": None, "layers": []}, loaded, Answer(), "walls")
    assert not (tmp_path / "work" / "labels" / "walls").exists()
