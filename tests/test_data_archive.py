"""engine/data/archive.py: safe extraction of uploaded zips (paths, links, sizes, bombs) and finding the set inside."""

import stat
import zipfile

import numpy as np
import pytest

from engine.data.archive import RATIO_CHECK_BYTES, ArchiveError, as_data_path, dataset_root, safe_extract_zip


def _zip(path, entries):
    """entries: (name, bytes) or (ZipInfo, bytes); deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def test_extracts_a_normal_export_and_finds_its_root(tmp_path):
    z = _zip(tmp_path / "set.zip", [
        ("my-set/data.yaml", b"train: train/images\n"),
        ("my-set/train/images/a.jpg", b"jpeg"),
        ("my-set/train/labels/a.txt", b"0 0.5 0.5 0.1 0.1\n"),
        ("__MACOSX/my-set/._a.jpg", b"junk"),
        ("my-set/.DS_Store", b"junk"),
    ])
    dest = safe_extract_zip(z, tmp_path / "out")
    assert (dest / "my-set/train/labels/a.txt").read_bytes() == b"0 0.5 0.5 0.1 0.1\n"
    assert not (dest / "__MACOSX").exists() and not (dest / "my-set/.DS_Store").exists()
    assert dataset_root(dest) == dest / "my-set"


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/etc/evil.txt", "C:/evil.txt", "..\\evil.txt"])
def test_rejects_path_traversal(tmp_path, name):
    z = _zip(tmp_path / "bad.zip", [("fine.txt", b"x"), (name, b"pwned")])
    with pytest.raises(ArchiveError, match="absolute path|climbs out"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_rejects_symlinks(tmp_path):
    info = zipfile.ZipInfo("link")
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "link.zip", [("a.txt", b"x"), (info, b"/etc/passwd")])
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rejects_too_many_files(tmp_path):
    z = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(6)])
    with pytest.raises(ArchiveError, match="6 entries, over the limit of 5"):
        safe_extract_zip(z, tmp_path / "out", max_files=5)
    assert safe_extract_zip(z, tmp_path / "ok", max_files=6) == tmp_path / "ok"


def test_rejects_too_large(tmp_path):
    z = _zip(tmp_path / "big.zip", [("a.bin", np.random.default_rng(0).bytes(4000))])
    with pytest.raises(ArchiveError, match="unpacks to .* over the limit"):
        safe_extract_zip(z, tmp_path / "out", max_bytes=3000)


def test_rejects_zip_bombs(tmp_path):
    z = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(RATIO_CHECK_BYTES + 1024**2))])
    assert z.stat().st_size < 100_000  # ~1000x compression
    with pytest.raises(ArchiveError, match="zip bomb"):
        safe_extract_zip(z, tmp_path / "out")


def test_not_a_zip_says_so(tmp_path):
    bad = tmp_path / "photo.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="not a zip file"):
        safe_extract_zip(bad, tmp_path / "out")


def test_as_data_path_extracts_zips_and_checks_folders(tmp_path):
    z = _zip(tmp_path / "set.zip", [("wrap/valid/images/a.jpg", b"x"), ("wrap/valid/labels/a.txt", b"")])
    root = as_data_path(z, tmp_path / "uploads")
    assert root.name == "wrap" and (root / "valid/images/a.jpg").is_file()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        as_data_path(tmp_path / "missing", tmp_path / "uploads")
    with pytest.raises(ValueError, match="No data set given"):
        as_data_path("  ", tmp_path / "uploads")
