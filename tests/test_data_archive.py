"""engine/data/archive.py: safe extraction of uploaded zips (paths, links, sizes, bombs) and finding the set inside."""

import stat
import zipfile

import numpy as np
import pytest

from engine.data.archive import (
    RATIO_CHECK_BYTES,
    ArchiveError,
    as_data_path,
    dataset_root,
    extract_upload,
    has_layout,
    remove_upload,
    safe_extract_zip,
)


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


def bomb_79x(megabytes: int = 12) -> bytes:
    """Bytes that deflate about 79x: 8 random bytes per KiB, zeros between (under the 100x limit)."""
    rows = np.zeros((megabytes * 1024, 1024), np.uint8)
    rows[:, :8] = np.random.default_rng(0).integers(0, 256, (rows.shape[0], 8))
    return rows.tobytes()


def _png(size=(8, 6)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(out, "PNG")
    return out.getvalue()


def test_has_layout_from_member_names():
    assert has_layout(["set/train/images/a.jpg", "set/train/labels/a.txt"])
    assert has_layout(["x/valid/_annotations.coco.json"]) and has_layout(["images/", "masks/a.png"])
    assert not has_layout(["set/train/images/a.jpg", "set/valid/labels/a.txt"])  # not beside each other
    assert not has_layout(["blob.bin", "notes/readme.txt", "images.txt"])


def test_a_zip_without_a_layout_is_refused_before_writing(tmp_path):
    z = _zip(tmp_path / "big.zip", [("blob.bin", bomb_79x()), ("notes.txt", b"hi")])
    ratio = 12 * 1024**2 / z.stat().st_size
    assert 50 < ratio < 100  # safe_extract_zip alone would write it all
    uploads = tmp_path / "uploads"
    with pytest.raises(ArchiveError, match=r"The uploaded zip big\.zip holds no labelled set"):
        extract_upload(z, uploads)
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize("json_text, reason", [
    ('{"images": [{"id": 0, "file_name": "../../secret.png"}], "annotations": []}', "points outside the folder"),
    ('{"images": [{"id": 0, "file_name": "/etc/hostname"}], "annotations": []}', "points outside the folder"),
    ('{"images": [{"id": 0, "file_name": "a.png"}], "annot', "not valid JSON"),
])
def test_an_extracted_zip_that_fails_to_open_is_deleted(tmp_path, json_text, reason):
    (tmp_path / "secret.png").write_bytes(_png())
    z = _zip(tmp_path / "coco.zip", [("export/train/_annotations.coco.json", json_text.encode()),
                                     ("export/train/a.png", _png()), ("export/train/pad.bin", bomb_79x(9))])
    uploads = tmp_path / "uploads"
    with pytest.raises(ArchiveError, match=reason) as err:
        extract_upload(z, uploads)
    message = str(err.value)
    assert message.startswith("The uploaded zip coco.zip is not a usable labelled set: "
                              "export/train/_annotations.coco.json")  # the entry as named in the zip
    assert str(uploads) not in message and str(tmp_path) not in message
    assert list(uploads.iterdir()) == []  # 9 MB were written, and deleted at once


def test_a_roboflow_export_with_an_empty_test_split_is_accepted(tmp_path):
    z = _zip(tmp_path / "rf.zip", [("train/images/a.png", _png()), ("train/labels/a.txt", b"0 0.5 0.5 0.2 0.2\n"),
                                   ("test/images/", b""), ("test/labels/", b""),
                                   ("data.yaml", b"train: ../train/images\ntest: ../test/images\n")])
    root = extract_upload(z, tmp_path / "uploads")
    assert (root / "train/labels/a.txt").is_file()
    assert remove_upload(root / "train", tmp_path / "uploads") == root.resolve()
    assert list((tmp_path / "uploads").iterdir()) == []
    assert remove_upload(tmp_path, tmp_path / "uploads") is None and tmp_path.is_dir()  # only uploads go
