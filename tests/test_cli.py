"""`python -m engine` (engine/cli.py) on the real photos in ../shared, with a tiny random model.

Most tests call `engine.cli.main(argv)` in-process (exit status returned, output through capsys); the help
text and the offline Hub failure run as real subprocesses, as a user would type them.
"""

from __future__ import annotations

import json
import os
import re
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
    assert sorted(helps) == ["benchmark", "evaluate", "export", "predict", "train"]
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
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}__{slug}.png" for s in stems for slug in SLUGS)
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
    real_predict_batch = SegmenterBase.predict_batch

    def recording_predict_batch(self, images, prompts):
        batches.append(len(images))
        return real_predict_batch(self, images, prompts)

    monkeypatch.setattr(SegmenterBase, "predict_batch", recording_predict_batch)
    code, _, err = run_cli(["predict", "--model", tiny_model_dir, "--images", *valid_photos[:5], "--prompt",
                            PROMPTS[0], "--out", tmp_path / "masks", "--batch-size", "3", *THREADS], capsys)
    assert code == 0, err
    assert batches == [3, 2]
    assert len(list((tmp_path / "masks").iterdir())) == 5


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
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}__segment_crack.png" for p in good)
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
        masks = sorted(out.iterdir())
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
    """A YOLO split folder in tmp_path linking 10 real photos and their label files."""
    root = tmp_path / "small"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for photo in valid_photos[::14][:10]:
        (root / "images" / photo.name).symlink_to(photo)
        label = photo.parent.parent / "labels" / f"{photo.stem}.txt"
        (root / "labels" / label.name).symlink_to(label)
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
