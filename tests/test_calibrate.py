"""engine/calibrate.py: thresholds picked with absent concepts counted, on known numbers and on a tiny model."""

import json
import shutil

import pytest

from engine.calibrate import PRESENCE_GRID, PromptCalibration, calibrate_model, pick_thresholds, write_thresholds
from engine.data import open_dataset
from engine.metrics import THRESHOLDS


def test_pick_thresholds_counts_absent_photos_as_empty_ground_truth():
    own_iou = [[0.8, 0.6], [0.4, 0.5]]  # two own photos, IoU at pixel thresholds 0.3 and 0.6
    args = dict(own_iou=own_iou, own_presence=[0.9, 0.9], own_empty=[False, False], absent_max=[0.5, 0.7],
                absent_presence=[0.5, 0.7], thresholds=[0.3, 0.6])
    # no presence gate: the absent photos fire at 0.3, one still at 0.6: 0.6 wins, (1.1 + 1) / 4
    assert pick_thresholds(**args, presence_grid=[0.0]) == (0.6, 0.0, pytest.approx(2.1 / 4))
    # a presence gate at 0.8 silences both absent photos and keeps the own ones: 0.3 wins, (1.2 + 2) / 4
    assert pick_thresholds(**args, presence_grid=[0.0, 0.8]) == (0.3, 0.8, pytest.approx(3.2 / 4))
    # an own photo with nothing labelled scores 1 when gated away
    assert pick_thresholds([[0.0]], [0.2], [True], [], [], thresholds=[0.5], presence_grid=[0.1, 0.5]) == (
        0.5, 0.5, 1.0)


def test_own_and_absent_photos_weigh_half_each_whatever_their_counts():
    # one own photo: IoU 0.9 at pixel threshold 0.3, 0 at 0.9; nine absent photos, each fires at 0.3 only
    args = dict(own_iou=[[0.9, 0.0]], own_presence=[1.0], own_empty=[False], absent_max=[0.5] * 9,
                absent_presence=[1.0] * 9, thresholds=[0.3, 0.9], presence_grid=[0.0])
    # halves: 0.3 scores (0.9 + 0) / 2 = 0.45, 0.9 scores (0 + 1) / 2 = 0.5 (a plain mean: 0.09 against 0.9)
    assert pick_thresholds(**args) == (0.9, 0.0, pytest.approx(0.5))
    args["own_iou"] = [[1.0, 0.0]]
    args["absent_max"] = [0.5] + [0.1] * 8  # one absent photo fires at 0.3: (1 + 8/9) / 2 beats (0 + 1) / 2
    assert pick_thresholds(**args) == (0.3, 0.0, pytest.approx((1 + 8 / 9) / 2))


def test_the_found_floor_holds_on_photos_the_model_has_not_fitted_too():
    # four fitted own photos, all at presence 0.95; four absent photos that fire, at presence 0.3 to 0.8
    args = dict(own_iou=[[0.5]] * 4, own_presence=[0.95] * 4, own_empty=[False] * 4, absent_max=[0.9] * 4,
                absent_presence=[0.3, 0.5, 0.7, 0.8], thresholds=[0.5], presence_grid=[0.1, 0.6, 0.9])
    assert pick_thresholds(**args) == (0.5, 0.9, pytest.approx(0.75))  # silences every absent photo
    # unseen photos with the concept at 0.95, 0.65, 0.7: 0.9 would find one of three; 0.6 finds them all
    assert pick_thresholds(**args, unseen_presence=[0.95, 0.65, 0.7]) == (0.5, 0.6, pytest.approx(0.5))
    # one at 0.4: only the lowest presence threshold keeps it found
    assert pick_thresholds(**args, unseen_presence=[0.95, 0.65, 0.4])[1] == 0.1


@pytest.fixture(scope="module")
def small_sets(shared_data):
    cracks = open_dataset(shared_data / "cracks" / "valid", name="cracks/valid")
    joints = open_dataset(shared_data / "joints" / "valid", name="joints/valid")
    return [(cracks.subset(range(3)), ["segment crack"]), (joints.subset(range(2)), ["segment taping area"])]


@pytest.mark.slow
def test_calibrate_model_on_a_tiny_model(tiny_segmenter, small_sets):
    out = calibrate_model(tiny_segmenter, small_sets, n_images=2)
    assert list(out) == ["segment crack", "segment taping area"]
    crack = out["segment crack"]
    assert (crack.n_own, crack.n_absent) == (2, 2)  # n_images per set; the other set's photos are absent
    assert crack.threshold in THRESHOLDS and crack.presence_threshold in PRESENCE_GRID
    assert 0.0 <= crack.score <= 1.0 and len(crack.sweep) == len(THRESHOLDS)
    with pytest.raises(ValueError, match="two sets"):
        calibrate_model(tiny_segmenter, [small_sets[0], small_sets[0]], n_images=1)


@pytest.mark.slow
def test_calibrate_model_holds_the_found_floor_on_unseen_photos(tiny_segmenter, small_sets, shared_data,
                                                               monkeypatch):
    import engine.calibrate as calibrate

    unseen = open_dataset(shared_data / "joints" / "train", name="joints/train").subset(range(3))
    floors = {}

    def recording(*args, unseen_presence=(), **kwargs):
        floors[len(floors)] = list(unseen_presence)
        return pick_thresholds(*args, unseen_presence=unseen_presence, **kwargs)

    monkeypatch.setattr(calibrate, "pick_thresholds", recording)
    out = calibrate_model(tiny_segmenter, small_sets, n_images=2, unseen={"segment taping area": unseen})
    # the taping prompt's floor is the presence on the first 2 unseen photos (both hold a labelled seam); the
    # crack prompt has none
    want = [tiny_segmenter.prediction(unseen[i][0], ["segment taping area"]).presence["segment taping area"]
            for i in range(2)]
    assert floors == {0: [], 1: pytest.approx(want)}
    assert out["segment taping area"].n_unseen == 2 and out["segment crack"].n_unseen == 0
    with pytest.raises(ValueError, match="no set holds"):
        calibrate_model(tiny_segmenter, small_sets, n_images=1, unseen={"segment stain": unseen})


def test_write_thresholds_merges_into_drywall_qa_json(tmp_path):
    (tmp_path / "drywall_qa.json").write_text(json.dumps({"threshold": 0.45, "thresholds": {"a": 0.4, "b": 0.6},
                                                          "prompts": ["a", "b"]}))
    write_thresholds(tmp_path, {"a": PromptCalibration(0.3, 0.9, 0.7, 10, 5, {})}, source="train")
    meta = json.loads((tmp_path / "drywall_qa.json").read_text())
    assert meta["thresholds"] == {"a": 0.3, "b": 0.6} and meta["presence_thresholds"] == {"a": 0.9}
    assert meta["threshold"] == 0.45 and meta["prompts"] == ["a", "b"]
    assert meta["calibration"]["images"] == {"a": [10, 5]}


@pytest.mark.slow
def test_calibrate_command_rewrites_the_model_thresholds(tiny_model_dir, shared_data, tmp_path, capsys):
    from engine.cli import main
    from engine.models import load_segmenter

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    code = main(["calibrate", "--model", str(model), "--data", f"{shared_data / 'cracks'}=segment crack",
                 "--data", f"{shared_data / 'joints'}=segment taping area", "--images", "2", "--threads", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "wrote" in out
    meta = json.loads((model / "drywall_qa.json").read_text())
    assert set(meta["thresholds"]) == set(meta["presence_thresholds"]) == {"segment crack", "segment taping area"}
    seg = load_segmenter(model, threads=2)
    assert seg.thresholds_for(["segment crack", "other"]) == {"segment crack": meta["thresholds"]["segment crack"],
                                                              "other": 0.5}


@pytest.mark.slow
def test_calibrate_command_on_held_out_photos(tiny_model_dir, shared_data, tmp_path, capsys):
    from engine.cli import main

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    code = main(["calibrate", "--model", str(model), "--data", f"{shared_data / 'cracks'}=segment crack",
                 "--data", f"{shared_data / 'joints'}=segment taping area", "--images", "50",
                 "--holdout-share", "0.1", "--threads", "2"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    meta = json.loads((model / "drywall_qa.json").read_text())
    assert meta["calibration"]["source"] == "10% of the train splits held out of training, first 50 photos per set"
    assert meta["calibration"]["images"]["segment taping area"] == [11, 50]  # joints: 11 of 110 held out
