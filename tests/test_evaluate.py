"""engine/evaluate.py on a tiny synthetic labelled set whose scores are worked out by hand.

The fake segmenter reads its answer from the image: prompt "red" returns the red channel / 255 and
prompt "green" the green channel / 255, so each image spells out its own probability maps.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from engine.evaluate import EvalReport, PromptReport, auroc, best_threshold, evaluate, evaluate_sets, false_alarm_rate
from engine.metrics import THRESHOLDS

# red values / 255: 230 -> 0.902, 150 -> 0.588, 100 -> 0.392, 56 -> 0.220 (all away from the 0.05 grid)


def _image_a():
    """gt: left half (8 px). red: 6 gt px at 0.902, 2 gt px at 0.392, 1 background px at 0.588, rest 0."""
    gt = np.zeros((4, 4), bool)
    gt[:, :2] = True
    red = np.zeros((4, 4), np.uint8)
    red[:3, :2] = 230
    red[3, :2] = 100
    red[0, 3] = 150
    return red, gt


def _image_b():
    """gt empty, red all 0: both empty at every threshold."""
    return np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool)


def _image_c():
    """gt: a 2x2 block (4 px); red 0.220 everywhere."""
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True
    return np.full((4, 4), 56, np.uint8), gt


class FakeSet:
    """Same interface as engine.data's labelled sets: len, [i] -> (PIL RGB, bool mask), items, name, prompts."""

    name = "fake"
    prompts = ("red", "green")

    def __init__(self):
        self._rows = []
        for image_id, (red, gt) in zip(["a", "b", "c"], [_image_a(), _image_b(), _image_c()]):
            rgb = np.stack([red, np.full_like(red, 255), np.zeros_like(red)], axis=-1)  # green: 1.0 everywhere
            self._rows.append((Image.fromarray(rgb, "RGB"), gt))
        self.items = [SimpleNamespace(image_id=i) for i in ["a", "b", "c"]]

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, i):
        return self._rows[i]


class FakeSegmenter:
    threshold = 0.5

    def __init__(self):
        self.calls = []

    def predict(self, image, prompts):
        self.calls.append(list(prompts))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        channel = {"red": 0, "green": 1}
        return {p: arr[..., channel[p]] for p in prompts}


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return evaluate(FakeSegmenter(), FakeSet(), progress=False)


def test_per_image_and_pooled_scores(report):
    r = report.prompts["red"]
    assert r.n_images == 3 and r.threshold == 0.5
    # at 0.5: a: tp 6 fp 1 fn 2 (IoU 6/9, Dice 12/15); b: empty/empty (1, 1); c: tp 0 fn 4 (0, 0)
    assert r.miou == pytest.approx((6 / 9 + 1 + 0) / 3)
    assert r.dice == pytest.approx((12 / 15 + 1 + 0) / 3)
    # pooled: tp 6, fp 1, fn 6, tn 7 + 16 + 12 = 35
    assert r.pooled_iou == pytest.approx(6 / 13)
    assert r.pooled_dice == pytest.approx(12 / 19)
    assert r.precision == pytest.approx(6 / 7)
    assert r.recall == pytest.approx(6 / 12)
    assert r.pixel_accuracy == pytest.approx(41 / 48)


def test_sweep_and_best_threshold(report):
    r = report.prompts["red"]
    assert list(r.sweep) == [float(t) for t in THRESHOLDS]
    expected = {}
    for t in THRESHOLDS:
        a = 8 / 9 if t < 0.392 else (6 / 9 if t < 0.588 else (6 / 8 if t < 0.902 else 0.0))
        c = 4 / 16 if t < 0.220 else 0.0
        expected[float(t)] = (a + 1.0 + c) / 3
    assert r.sweep == pytest.approx(expected)
    # 0.05 .. 0.20 tie at the top; the tie goes to the one closest to 0.5
    assert r.best_threshold == 0.2
    assert r.best_miou == pytest.approx((8 / 9 + 1 + 0.25) / 3)


def test_worst_images(report):
    assert report.prompts["red"].worst == [("c", 0.0), ("a", pytest.approx(6 / 9)), ("b", 1.0)]
    # "green" predicts every pixel: a 8/16, b 0 (empty mask, full prediction), c 4/16
    g = report.prompts["green"]
    assert g.worst[0] == ("b", 0.0)
    assert g.miou == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert g.precision == pytest.approx(12 / 48) and g.recall == 1.0
    assert g.best_threshold == 0.5  # flat sweep: every threshold ties


def test_one_predict_call_per_image_with_all_prompts():
    seg = FakeSegmenter()
    calls = []
    rep = evaluate(seg, FakeSet(), ["red", " green "], progress=False, k_worst=1,
                   on_image=lambda i, n: calls.append((i, n)))
    assert seg.calls == [["red", "green"]] * 3
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert list(rep.prompts) == ["red", "green"]
    assert len(rep.prompts["red"].worst) == 1
    assert rep.prompts["red"].ms_per_image >= 0


def test_threshold_override():
    rep = evaluate(FakeSegmenter(), FakeSet(), ["red"], threshold=0.3, progress=False)
    r = rep.prompts["red"]
    assert r.threshold == 0.3
    assert r.miou == pytest.approx((8 / 9 + 1 + 0) / 3)


def test_to_dict_is_json_ready(report):
    d = json.loads(json.dumps(report.to_dict()))
    assert d["dataset"] == "fake"
    assert set(d["prompts"]) == {"red", "green"}
    row = d["prompts"]["red"]
    assert set(row) == set(PromptReport.__dataclass_fields__)
    assert row["n_images"] == 3
    assert row["best_threshold"] == 0.2
    assert row["miou"] == pytest.approx(5 / 9)
    assert row["sweep"]["0.05"] == pytest.approx(report.prompts["red"].sweep[0.05])
    assert row["worst"][0] == {"image_id": "c", "iou": 0.0}


def test_format_table(report):
    lines = report.format_table().splitlines()
    assert lines[0].split() == ["prompt", "n", "mIoU", "Dice", "pooled", "IoU", "precision", "recall", "best",
                                "thr", "ms/img"]
    assert lines[2].split()[:8] == ["red", "3", "0.556", "0.600", "0.462", "0.857", "0.500", "0.20"]
    assert len(lines) == 4


def test_best_threshold_tie_break():
    assert best_threshold({0.3: 0.8, 0.45: 0.8, 0.55: 0.8, 0.9: 0.1}) == (0.45, 0.8)


class _WrongSize(FakeSegmenter):
    def predict(self, image, prompts):
        return {p: np.zeros((2, 2), np.float32) for p in prompts}


class _Logits(FakeSegmenter):
    def predict(self, image, prompts):
        return {p: np.full((4, 4), -3.0, np.float32) for p in prompts}


def test_bad_segmenter_output_is_explained():
    with pytest.raises(ValueError, match="image's own size"):
        evaluate(_WrongSize(), FakeSet(), progress=False)
    with pytest.raises(ValueError, match="sigmoid"):
        evaluate(_Logits(), FakeSet(), progress=False)
    with pytest.raises(ValueError, match="outside"):
        evaluate(FakeSegmenter(), FakeSet(), threshold=1.5, progress=False)


# ----------------------------------------------------------------------------------------- absent concepts


def _area(prob, threshold=0.5):
    return float((np.asarray(prob) >= threshold).mean())


def test_false_alarm_rate_on_constructed_maps():
    everywhere, empty = np.full((8, 8), 0.9), np.zeros((8, 8))
    assert false_alarm_rate([_area(everywhere)] * 3) == 1.0
    assert false_alarm_rate([_area(empty)] * 3) == 0.0
    speck = np.zeros((100, 100))
    speck[:10, :10] = 0.9  # exactly 1% of the photo: not over the limit
    assert false_alarm_rate([_area(speck), _area(everywhere)]) == 0.5
    assert false_alarm_rate([]) == 0.0


def test_auroc_known_cases():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5  # no separation
    assert auroc([0.9, 0.1], [0.5]) == 0.5
    assert auroc([], [0.5]) is None


class OtherSet(FakeSet):
    name = "fake2"
    prompts = ("green",)


def test_each_prompt_runs_on_the_other_sets_photos_as_absent():
    seg = FakeSegmenter()
    rep = evaluate_sets(seg, [(FakeSet(), ["red"]), (OtherSet(), ["green"])], progress=False)
    # one call per photo, its set's prompts first, then the absent ones
    assert seg.calls == [["red", "green"]] * 3 + [["green", "red"]] * 3
    red, green = rep.prompts["red"], rep.prompts["green"]
    assert red.miou == pytest.approx(5 / 9) and red.dataset == "fake"  # own scores as with one set
    # green is 1.0 everywhere: every photo of the other set is a false alarm, fully covered
    assert green.absent.n_images == 3
    assert green.absent.false_alarm_rate == 1.0 and green.absent.mean_area == 1.0
    # red on the other set's photos: photo a marks 7 of 16 pixels, b and c nothing
    assert red.absent.false_alarm_rate == pytest.approx(1 / 3)
    assert red.absent.mean_area == pytest.approx(7 / 16 / 3)
    assert red.absent.worst[0] == ("fake2/a", pytest.approx(7 / 16))
    # presence of red, own labelled photos (a: 0.902, c: 0.220) vs the other set's (0.902, 0, 0.220)
    assert red.presence_auroc == pytest.approx(4 / 6)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["prompts"]["red"]["absent"]["false_alarm_rate"] == pytest.approx(1 / 3)
    assert d["prompts"]["green"]["presence_auroc"] == pytest.approx(green.presence_auroc)
    assert d["dataset"] == "fake + fake2"
    header = rep.format_table().splitlines()[0]
    for column in ("set", "false alarm", "absent area", "presence AUROC"):
        assert column in header


def test_one_set_has_no_absent_figures(report):
    assert report.prompts["red"].absent is None and report.prompts["red"].presence_auroc is None
    assert "false alarm" not in report.format_table()
