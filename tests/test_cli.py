"""`python -m engine` (engine/cli.py) on the real photos in ../shared, with a tiny random model.

Most tests call `engine.cli.main(argv)` in-process (exit status returned, output through capsys); the help
text and the offline Hub failure run as real subprocesses, as a user would type them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import build_parser, main
from engine.models import load_segmenter
from engine.onnx.runtime import OnnxSegmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["segment crack", "segment taping area"]
SLUGS = ["segment_crack", "segment_taping_area"]
THREADS = ["--threads", "2"]  # the machine is shared; the tiny model needs no more


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("DRYWALL_DEBUG", raising=False)


@pytest.fixture(scope="module")
def valid_photos(shared_data) -> list[Path]:
    """The cracks/valid photos, sorted by name (640x640 Roboflow exports)."""
    photos = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))
    assert len(photos) == 141
    return photos


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) in-process -> (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_mask(path: Path) -> tuple[Image.Image, np.ndarray]:
    with Image.open(path) as image:
        image.load()
    return image, np.asarray(image)


def exif_rotated_photo(source: Path, out: Path) -> Path:
    """A 640x400 crop of a real photo saved with EXIF orientation 6 (displayed rotated: 400 wide, 640 high)."""
    with Image.open(source) as photo:
        crop = photo.convert("RGB").crop((0, 0, 640, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    crop.save(out, quality=90, exif=exif)
    return out


# ------------------------------------------------------------------------------------------------ help


@pytest.mark.slow
def test_help_names_every_command_with_a_description():
    result = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps long lines; compare word sequences
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    assert sorted(helps) == ["benchmark", "calibrate", "evaluate", "export", "measure", "predict", "push",
                            "train"]
    for command, description in helps.items():
        assert description and len(description.split()) >= 4, f"{command} has no real description"
        assert f"{command} {description}" in text


def test_predict_help_mentions_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--images", "--prompt", "--out", "--threshold"):
        assert option in out
    assert "{image_id}__{prompt_slug}.png" in out


# --------------------------------------------------------------------------------------------- predict


@pytest.mark.slow
def test_predict_writes_one_binary_mask_per_photo_and_prompt(tiny_model_dir, valid_photos, tmp_path, capsys):
    files = valid_photos[:3]
    folder = tmp_path / "more"
    folder.mkdir()
    for photo in valid_photos[3:5]:
        (folder / photo.name).symlink_to(photo)
    rotated = exif_rotated_photo(valid_photos[5], tmp_path / "portrait.jpg")
    out = tmp_path / "masks"

    code, stdout, err = run_cli(
        ["predict", "--model", tiny_model_dir, "--images", *files, folder, rotated,
         "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--out", out, "--threshold", "0.5",
         "--batch-size", "2", *THREADS], capsys)

    assert code == 0, err
    assert "wrote 6 x 2 masks" in stdout
    stems = [p.stem for p in [*files, *valid_photos[3:5]]] + ["portrait"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}__{slug}.png" for s in stems for slug in SLUGS)
    for stem in stems:
        expected = (400, 640) if stem == "portrait" else (640, 640)  # (width, height) as displayed
        for slug in SLUGS:
            image, values = read_mask(out / f"{stem}__{slug}.png")
            assert image.mode == "L"
            assert image.size == expected, f"{stem}__{slug}.png"
            assert set(np.unique(values)) <= {0, 255}


def test_predict_runs_batch_size_photos_per_forward_pass(tiny_model_dir, valid_photos, tmp_path, capsys,
                                                         monkeypatch):
    from engine.segmenter import SegmenterBase

    batches = []
    real_prediction_batch = SegmenterBase.prediction_batch

    def recording_prediction_batch(self, images, prompts, **kwargs):
        batches.append(len(images))
        return real_prediction_batch(self, images, prompts, **kwargs)

    monkeypatch.setattr(SegmenterBase, "prediction_batch", recording_prediction_batch)
    code, _, err = run_cli(["predict", "--model", tiny_model_dir, "--images", *valid_photos[:5], "--prompt",
                            PROMPTS[0], "--out", tmp_path / "masks", "--batch-size", "3", *THREADS], capsys)
    assert code == 0, err
    assert batches == [3, 2]
    assert len(list((tmp_path / "masks").glob("*.png"))) == 5


def test_predict_reports_unreadable_files_and_still_writes_the_good_ones(tiny_model_dir, valid_photos, tmp_path,
                                                                        capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    empty = bad / "empty.jpg"
    empty.write_bytes(b"")
    text = bad / "notes.jpg"
    text.write_text("this is a site note, not a photo\n")
    good = valid_photos[:3]
    out = tmp_path / "masks"

    # batch of 4 holds both bad files and two good ones: the good ones must not be lost with the batch
    code, stdout, err = run_cli(
        ["predict", "--model", tiny_model_dir, "--images", good[0], empty, text, good[1], good[2],
         "--prompt", PROMPTS[0], "--out", out, "--batch-size", "4", *THREADS], capsys)

    assert code != 0
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{p.stem}__segment_crack.png" for p in good)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 2, err
    empty_line = next(line for line in error_lines if str(empty) in line)
    assert "empty (0 bytes)" in empty_line
    text_line = next(line for line in error_lines if str(text) in line)
    assert "not an image" in text_line
    assert "2 of 5 images could not be read" in err


def test_threshold_0_gives_full_masks_and_1_empty_ones(tiny_model_dir, valid_photos, tmp_path, capsys):
    photos = valid_photos[:2]
    for threshold, value in (("0.0", 255), ("1.0", 0)):
        out = tmp_path / threshold
        code, _, err = run_cli(["predict", "--model", tiny_model_dir, "--images", *photos, "--prompt", PROMPTS[0],
                                "--prompt", PROMPTS[1], "--out", out, "--threshold", threshold, *THREADS], capsys)
        assert code == 0, err
        masks = sorted(out.glob("*.png"))
        assert len(masks) == 4
        for path in masks:
            # prob >= 0 everywhere; prob >= 1 nowhere (float32 sigmoid reaches 1.0 only for logits above ~17)
            assert set(np.unique(read_mask(path)[1])) == {value}, f"{path.name} at --threshold {threshold}"


@pytest.mark.parametrize("threshold", ["1.01", "50", "-0.1", "nan"])
def test_predict_rejects_a_threshold_outside_0_1_before_loading(threshold, valid_photos, tmp_path, capsys):
    out = tmp_path / "masks"
    code, _, err = run_cli(["predict", "--model", tmp_path / "no-model-here", "--images", valid_photos[0],
                            "--prompt", PROMPTS[0], "--out", out, "--threshold", threshold], capsys)
    assert code == 1
    assert "outside [0, 1]" in err  # not the missing model: arguments are checked first
    assert not out.exists()


def test_predict_refuses_two_photos_that_would_write_the_same_masks(tiny_model_dir, valid_photos, tmp_path, capsys):
    for folder in ("site-a", "site-b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "wall.jpg").symlink_to(valid_photos[0 if folder == "site-a" else 1])
    out = tmp_path / "masks"
    code, _, err = run_cli(["predict", "--model", tiny_model_dir, "--images", tmp_path / "site-a" / "wall.jpg",
                            tmp_path / "site-b", "--prompt", PROMPTS[0], "--out", out, *THREADS], capsys)
    assert code == 1
    assert "site-a/wall.jpg" in err and "site-b/wall.jpg" in err and "wall__*.png" in err
    assert not out.exists()


# -------------------------------------------------------------------------------------------- evaluate


def table_row(stdout: str, prompt: str) -> dict[str, str]:
    """The cells of `prompt`'s row in the evaluate table (cells are separated by two or more spaces)."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("prompt") and "mIoU" in line)
    columns = re.split(r"\s{2,}", lines[header].strip())
    row = next(line for line in lines[header + 2:] if line.startswith(prompt + " "))
    return dict(zip(columns, re.split(r"\s{2,}", row.strip())))


@pytest.mark.slow
def test_evaluate_on_the_full_valid_split_writes_json_and_prints_the_same_miou(tiny_model_dir, shared_data,
                                                                              tmp_path, capsys):
    report_path = tmp_path / "out.json"
    code, stdout, err = run_cli(["evaluate", "--model", tiny_model_dir, "--data", shared_data / "cracks" / "valid",
                                 "--prompt", PROMPTS[0], "--json", report_path, *THREADS], capsys)

    assert code == 0, err
    report = json.loads(report_path.read_text())
    scores = report["prompts"][PROMPTS[0]]
    assert scores["n_images"] == 141
    for key in ("miou", "dice", "precision", "recall", "best_threshold"):
        assert isinstance(scores[key], (int, float)) and 0.0 <= scores[key] <= 1.0, key
    assert scores["threshold"] == 0.5  # the model folder's own (drywall_qa.json)
    row = table_row(stdout, PROMPTS[0])
    assert row["n"] == "141"
    assert row["mIoU"] == f"{scores['miou']:.3f}"
    assert "(141 images)" in stdout


@pytest.fixture()
def small_split(valid_photos, tmp_path) -> Path:
    """A YOLO split folder in tmp_path with copies of 10 real photos and their label files (links out of a data
    set's folder are refused)."""
    root = tmp_path / "small"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for photo in valid_photos[::14][:10]:
        shutil.copyfile(photo, root / "images" / photo.name)
        label = photo.parent.parent / "labels" / f"{photo.stem}.txt"
        shutil.copyfile(label, root / "labels" / label.name)
    return root


@pytest.mark.slow
def test_evaluate_scores_each_prompt_at_the_given_threshold(tiny_model_dir, small_split, tmp_path, capsys):
    report_path = tmp_path / "small.json"
    code, stdout, err = run_cli(["evaluate", "--model", tiny_model_dir, "--data", small_split, "--prompt", PROMPTS[0],
                                 "--prompt", PROMPTS[1], "--threshold", "0.3", "--k-worst", "3",
                                 "--json", report_path, *THREADS], capsys)

    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert list(report["prompts"]) == PROMPTS
    for prompt in PROMPTS:
        scores = report["prompts"][prompt]
        assert scores["n_images"] == 10
        assert scores["threshold"] == 0.3
        assert len(scores["worst"]) == 3
        assert table_row(stdout, prompt)["mIoU"] == f"{scores['miou']:.3f}"


@pytest.mark.slow
def test_evaluate_several_sets_adds_absent_figures(tiny_model_dir, shared_data, tmp_path, capsys):
    report_path = tmp_path / "absent.json"
    code, stdout, err = run_cli(["evaluate", "--model", tiny_model_dir,
                                 "--data", f"{shared_data / 'joints' / 'valid'}={PROMPTS[1]}",
                                 "--data", f"{shared_data / 'cracks' / 'valid'}=\"{PROMPTS[0]}\"",
                                 "--json", report_path, *THREADS], capsys)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    crack, taping = report["prompts"][PROMPTS[0]], report["prompts"][PROMPTS[1]]
    assert crack["n_images"] == 141 and crack["absent"]["n_images"] == 24 and crack["dataset"] == "cracks/valid"
    assert taping["n_images"] == 24 and taping["absent"]["n_images"] == 141
    for row in (crack, taping):
        assert 0.0 <= row["absent"]["false_alarm_rate"] <= 1.0 and 0.0 <= row["presence_auroc"] <= 1.0
    assert table_row(stdout, PROMPTS[0])["false alarm"] == f"{crack['absent']['false_alarm_rate']:.1%}"
    assert "cracks/valid (141 images)" in stdout


def test_evaluate_needs_prompts_for_every_set(tiny_model_dir, shared_data, capsys):
    code, _, err = run_cli(["evaluate", "--model", tiny_model_dir, "--data", f"{shared_data / 'cracks' / 'valid'}",
                            "--data", f"{shared_data / 'joints' / 'valid'}={PROMPTS[1]}"], capsys)
    assert code == 1 and "each --data needs its prompts" in err


def test_predict_writes_a_csv_row_per_photo_and_prompt(tiny_model_dir, valid_photos, tmp_path, capsys):
    out = tmp_path / "masks"
    code, stdout, err = run_cli(["predict", "--model", tiny_model_dir, "--images", *valid_photos[:2], "--prompt",
                                 PROMPTS[0], "--prompt", PROMPTS[1], "--out", out, *THREADS], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [(Path(r["photo"]).name, r["prompt"]) for r in rows] == [
        (p.name, prompt) for p in valid_photos[:2] for prompt in PROMPTS]
    for r in rows:
        _, values = read_mask(out / f"{Path(r['photo']).stem}__{r['prompt'].replace(' ', '_')}.png")
        assert float(r["area_percent"]) == pytest.approx(100 * (values > 0).mean(), abs=1e-3)
        assert r["found"] in ("found", "not found") and float(r["threshold"]) == 0.5
        if r["found"] == "not found":
            assert not values.any()


def test_predict_ranks_write_their_shard_and_rank_0_merges(tiny_model_dir, valid_photos, tmp_path, capsys,
                                                           monkeypatch):
    """The ranks of `accelerate launch` run one after the other in this process (RANK / WORLD_SIZE as it sets them)."""
    out, photos = tmp_path / "masks", valid_photos[:3]
    argv = ["predict", "--model", tiny_model_dir, "--images", *photos, "--prompt", PROMPTS[0], "--out", out,
            "--merge-timeout", "5", *THREADS]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0 and stdout == "", err  # rank 1: its shard (the second photo) and its part, nothing printed
    assert sorted(p.name for p in out.iterdir()) == [f"{photos[1].stem}__segment_crack.png", "predictions.rank1.csv"]
    monkeypatch.setenv("RANK", "0")
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "wrote 3 x 1 masks" in stdout and "2 processes" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.stem}__segment_crack.png" for p in photos] + ["predictions.csv"])
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["photo"] for r in rows] == [p.name for p in photos]  # names, as the app's batch CSV: no server path


def test_photo_names_are_paths_below_the_folder_the_photos_share(tmp_path):
    from engine.cli import photo_names

    a, b = tmp_path / "site" / "north" / "a.jpg", tmp_path / "site" / "south" / "b.jpg"
    assert photo_names([a, b]) == {a: "north/a.jpg", b: "south/b.jpg"}
    assert photo_names([a]) == {a: "a.jpg"} and photo_names([]) == {}


def test_predict_refuses_a_rank_outside_the_world(valid_photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    code, _, err = run_cli(["predict", "--model", tmp_path / "no-model-here", "--images", valid_photos[0],
                            "--prompt", PROMPTS[0], "--out", tmp_path / "out"], capsys)
    assert code == 1 and "RANK=2 is outside 0..WORLD_SIZE-1" in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_report_writes_a_self_contained_html_row_per_photo(tiny_model_dir, valid_photos, tmp_path, capsys):
    out, report = tmp_path / "masks", tmp_path / "report.html"
    code, stdout, err = run_cli(["predict", "--model", tiny_model_dir, "--images", *valid_photos[:3], "--prompt",
                                 PROMPTS[0], "--prompt", PROMPTS[1], "--out", out, "--report", report, *THREADS],
                                capsys)
    assert code == 0, err
    assert f"wrote {report}" in stdout and (out / "predictions.csv").is_file()
    text = report.read_text()
    assert text.count('<tr class="photo">') == 3 and text.count("data:image/jpeg;base64,") == 6
    assert "http://" not in text and "https://" not in text
    rows = list(csv.DictReader((out / "predictions.csv").open()))  # the same numbers as the CSV
    assert f"area {float(rows[0]['area_percent']):.2f}%" in text


def test_push_refuses_a_bad_repo_id_and_fails_fast_offline(tiny_model_dir, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["push", "--run", tiny_model_dir, "--repo", "no-slash"], capsys)
    assert code == 1 and "is not a Hub model id" in err
    with socket.socket() as s:  # a port nothing listens on: the Hub is "offline"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    code, _, err = run_cli(["push", "--run", tiny_model_dir, "--repo", "someone/tiny"], capsys)
    assert code == 1 and "unreachable" in err and "Download the run as a zip" in err
    assert time.monotonic() - start < 10


def test_a_prompt_outside_the_trained_list_warns_on_stderr(tiny_model_dir, valid_photos, tmp_path, capsys):
    import shutil

    model = shutil.copytree(tiny_model_dir, tmp_path / "listed")
    (model / "drywall_qa.json").write_text(json.dumps({"threshold": 0.5, "prompts": [PROMPTS[0]]}))
    code, _, err = run_cli(["predict", "--model", model, "--images", valid_photos[0], "--prompt", "find mould",
                            "--out", tmp_path / "m", *THREADS], capsys)
    assert code == 0 and "warning: 'find mould'" in err and f"this model was trained on: '{PROMPTS[0]}'" in err


def test_evaluate_on_a_root_with_several_splits_asks_for_one(tiny_model_dir, shared_data, capsys):
    code, stdout, err = run_cli(["evaluate", "--model", tiny_model_dir, "--data", shared_data / "cracks",
                                 "--prompt", PROMPTS[0], *THREADS], capsys)
    assert code == 1
    assert err.startswith("error: ")
    assert "several splits (train, valid)" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


# ------------------------------------------------------------------------------------------------ models


def test_a_missing_model_folder_names_the_alternatives(valid_photos, tmp_path, capsys):
    code, _, err = run_cli(["predict", "--model", "/nonexistent", "--images", valid_photos[0],
                            "--prompt", PROMPTS[0], "--out", tmp_path / "masks"], capsys)
    assert code == 1
    assert "'/nonexistent'" in err
    for alternative in ("Hugging Face format", "checkpoints/", "export/", "CIDAS/clipseg-rd64-refined", "'auto'"):
        assert alternative in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_an_uncached_hub_id_fails_fast_when_offline(valid_photos, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    env.pop("DRYWALL_DEBUG", None)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "engine", "predict", "--model", "CIDAS/clipseg-rd64-refined", "--images",
         str(valid_photos[0]), "--prompt", PROMPTS[0], "--out", str(tmp_path / "masks")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start

    assert result.returncode == 1
    assert "HF_HUB_OFFLINE" in result.stderr
    assert "--model path/to/folder" in result.stderr  # says what to do instead
    assert "Traceback" not in result.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s (python start-up included)"
    assert not (tmp_path / "masks").exists()


# ---------------------------------------------------------------------------------------- export, threads


@pytest.mark.slow
def test_cli_export_prints_the_parity_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli-export"
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "onnx fp32 vs torch: max |dlogit|" in report and "default precision: fp32" in report
    assert isinstance(load_segmenter(out), OnnxSegmenter)


def test_main_sets_torch_threads_once_from_the_threads_option(tiny_model_dir, valid_photos, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        code, _, _ = run_cli(["predict", "--model", str(tiny_model_dir), "--images", str(valid_photos[0]),
                              "--prompt", "segment crack", "--out", str(tmp_path), "--threads", "1"], capsys)
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
