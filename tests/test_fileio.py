"""engine/fileio.py: atomic writes, the metrics reader, and folder swaps that keep the old folder on failure."""

import json
import os

import pytest

from engine.fileio import (
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    recover_dir,
    replace_dir,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_json_and_lines(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}
    append_line(tmp_path / "m.jsonl", '{"epoch": 1}')
    append_line(tmp_path / "m.jsonl", '{"epoch": 2}\n')
    assert (tmp_path / "m.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_read_jsonl_skips_a_broken_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epo\n\n{"epoch": 3}\n{"epoch": 4, "cut')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 3}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_replace_dir_swaps_in_the_new_folder(tmp_path):
    dst = tmp_path / "best"
    with replace_dir(dst) as tmp:
        (tmp / "w").write_text("1")
    with replace_dir(dst) as tmp:
        (tmp / "w").write_text("2")
        assert (dst / "w").read_text() == "1"  # the old folder stays in place while the new one is written
    assert (dst / "w").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_replace_dir_keeps_the_old_folder_on_an_exception(tmp_path):
    dst = tmp_path / "best"
    dst.mkdir()
    (dst / "w").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with replace_dir(dst) as tmp:
            (tmp / "w").write_text("half")
            raise RuntimeError("disk full")
    assert (dst / "w").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # the temporary folder is gone


def test_recover_dir_puts_back_a_folder_renamed_aside(tmp_path):
    old = tmp_path / ".best.old"
    old.mkdir()
    (old / "w").write_text("1")
    recover_dir(tmp_path / "best")
    assert (tmp_path / "best" / "w").read_text() == "1" and not old.exists()
    recover_dir(tmp_path / "best")  # nothing to do now
    assert (tmp_path / "best" / "w").read_text() == "1"
