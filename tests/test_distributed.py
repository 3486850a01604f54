"""engine.distributed: rank from the launcher's environment, shards, the part files and rank 0's merge; and one
two-process `accelerate launch ... -m engine predict` on real photos."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.distributed import (
    clear_stale_part,
    merge_parts,
    part_paths,
    rank_and_world,
    remove_parts,
    shard,
    write_part,
)
from engine.prediction import CSV_HEADER
from engine.report import ReportPhoto

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["segment crack", "segment taping area"]


def test_rank_and_world_read_the_launcher_environment():
    assert rank_and_world({}) == (0, 1)
    assert rank_and_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4)
    with pytest.raises(ValueError, match="outside 0..WORLD_SIZE-1"):
        rank_and_world({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        rank_and_world({"RANK": "zero", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("n, world", [(0, 2), (1, 3), (6, 2), (20, 3), (7, 7), (5, 8)])
def test_shards_cover_every_photo_exactly_once_and_balance(n, world):
    paths = [f"p{i}.jpg" for i in range(n)]
    shards = [shard(paths, r, world) for r in range(world)]
    assert sorted(p for s in shards for p in s) == sorted(paths)
    assert sum(len(s) for s in shards) == n
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="outside"):
        shard(paths, world, world)


def _rows(photo: str) -> list[list]:
    return [[photo, p, "found", 1.5, 0.9, 0.95, 0.5, 0.5, 12.0] for p in PROMPTS]


def test_merge_restores_the_photo_order_and_the_report_rows(tmp_path):
    photos = [f"site/p{i}.jpg" for i in range(7)]
    world = 3
    for rank in range(world):
        mine = shard(photos, rank, world)
        if rank == 1:
            mine = mine[1:]  # one photo could not be read: no rows
        rows = [row for p in mine for row in _rows(p)]
        entries = [ReportPhoto(photo=p, rows=_rows(p), thumbnails={PROMPTS[0]: "data:x"}) for p in mine]
        write_part(tmp_path, rank, rows, entries)
    rows, entries = merge_parts(tmp_path, world, photos, timeout=1, report=True)
    kept = [p for p in photos if p != "site/p1.jpg"]
    assert [(r[0], r[1]) for r in rows] == [(p, q) for p in kept for q in PROMPTS]
    assert [e.photo for e in entries] == kept and entries[0].thumbnails == {PROMPTS[0]: "data:x"}
    assert rows[0][3] == "1.5"  # read back from the CSV as text, written again as the same text
    remove_parts(tmp_path, world)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_part_after_the_timeout_names_the_rank(tmp_path):
    write_part(tmp_path, 0, _rows("a.jpg"))
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"predictions\.rank1\.csv.*rank\(s\) 1 did not finish"):
        merge_parts(tmp_path, 2, ["a.jpg", "b.jpg"], timeout=0.3, poll=0.05)
    assert time.monotonic() - start < 5


def test_a_leftover_part_from_another_run_is_refused_and_cleared(tmp_path):
    write_part(tmp_path, 0, _rows("a.jpg"))
    write_part(tmp_path, 1, _rows("old-run.jpg"))
    with pytest.raises(ValueError, match="old-run.jpg, which is not among this run's photos"):
        merge_parts(tmp_path, 2, ["a.jpg", "b.jpg"], timeout=1)
    clear_stale_part(tmp_path, 1)
    assert not part_paths(tmp_path, 1)[0].exists() and part_paths(tmp_path, 0)[0].exists()


def test_an_empty_part_still_marks_its_rank_done(tmp_path):
    write_part(tmp_path, 0, _rows("a.jpg"))
    write_part(tmp_path, 1, [])
    assert part_paths(tmp_path, 1)[0].read_text().splitlines() == [",".join(CSV_HEADER)]
    rows, entries = merge_parts(tmp_path, 2, ["a.jpg"], timeout=1)
    assert len(rows) == len(PROMPTS) and entries == []


@pytest.mark.slow
def test_two_process_predict_writes_every_mask_once_and_one_merged_csv_and_report(tiny_model_dir, shared_data,
                                                                                   tmp_path):
    """`accelerate launch` with two CPU processes (as the two-process training test): rank 0 merges."""
    photos = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[:6]
    out, report = tmp_path / "masks", tmp_path / "report.html"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "engine", "predict", "--model", str(tiny_model_dir), "--images", *map(str, photos),
           "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--out", str(out), "--report", str(report),
           "--batch-size", "2", "--merge-timeout", "120"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    masks = sorted(p.name for p in out.glob("*.png"))
    slugs = ["segment_crack", "segment_taping_area"]
    assert masks == sorted(f"{p.stem}__{s}.png" for p in photos for s in slugs)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [(r["photo"], r["prompt"]) for r in rows] == [(p.name, q) for p in photos for q in PROMPTS]
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == ["predictions.csv"]
    page = report.read_text()
    assert len(re.findall(r'<tr class="photo">', page)) == 6
    assert [page.index(p.name) for p in photos] == sorted(page.index(p.name) for p in photos)  # in photo order
    assert result.stdout.count("wrote 6 x 2 masks") == 1 and "2 processes" in result.stdout
