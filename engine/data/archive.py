"""Safe extraction of uploaded data set zips: every member checked before anything is written.

A public server takes zips from anyone, so `safe_extract_zip` refuses absolute paths, "..", links, special
files, encryption and zip bombs, and bounds the entries, bytes and compression ratio. `as_data_path` turns
what a user gave (a folder, or a .zip) into a labelled-set folder on disk.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from engine.data.coco import COCO_FILE_NAME
from engine.data.dataset import find_splits, open_dataset, split_layout
from engine.data.labels import is_absolute_name
from engine.errors import ArchiveError, LabelError, LabelWarning
from engine.images import IMAGE_SUFFIXES

__all__ = ["FOLDER_HINT", "MAX_ZIP_FILES", "MAX_ZIP_BYTES", "MAX_ZIP_RATIO", "RATIO_CHECK_BYTES", "ArchiveError",
           "DATA_SET_SUFFIXES", "is_data_set_file", "safe_extract_zip", "dataset_root", "has_layout", "check_upload",
           "extract_upload", "remove_upload", "upload_error", "as_data_path"]

MAX_ZIP_FILES = 20_000
MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size
MAX_ZIP_RATIO = 100  # uncompressed / compressed; JPEG exports sit near 1, YOLO label text near 3
RATIO_CHECK_BYTES = 8 * 1024**2  # ratios are judged only above this size (tiny files compress wildly)
_CHUNK = 1024**2
_SKIPPED_PREFIXES = ("__MACOSX/",)  # resource forks macOS Finder adds to zips
_SKIPPED_NAMES = frozenset({".DS_Store", "Thumbs.db"})
# Folders that belong to a data set layout (a split, or a split's parts): the set's root is above them.
_LAYOUT_FOLDERS = frozenset({"train", "valid", "val", "validation", "test", "images", "labels", "masks"})
# What a labelled set is made of (engine.data.dataset): photos and mask PNGs, YOLO label .txt, COCO .json,
# data.yaml. Nothing else in an uploaded zip is written to disk.
DATA_SET_SUFFIXES = frozenset(IMAGE_SUFFIXES) | {".txt", ".json", ".yaml", ".yml"}
# The advice for an archive too large; the app drops it where visitors cannot name server folders.
FOLDER_HINT = " or point to a folder on the server instead"
_LAYOUTS_IN_ZIP = (f"it needs a Roboflow YOLOv8 or COCO export (images/ + labels/ folders, or {COCO_FILE_NAME} "
                   "next to the photos) or images/ + masks/ folders; zip the data set folder itself.")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted (unsafe path, link, device, encryption), or None."""
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    posix = name.replace("\\", "/")
    if is_absolute_name(posix):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the folder with '..'"
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type in the high 16 bits (0 from DOS/Windows)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def is_data_set_file(name: str) -> bool:
    """Whether a zip member can be part of a labelled set (by its suffix; folders too)."""
    return name.endswith(("/", "\\")) or PurePosixPath(name.replace("\\", "/")).suffix.lower() in DATA_SET_SUFFIXES


def _check_members(zip_name: str, members: list[zipfile.ZipInfo], written: list[zipfile.ZipInfo], max_files: int,
                   max_bytes: int, max_ratio: float) -> int:
    """Refuse an archive from its headers alone (see `safe_extract_zip`): the count and safety of all `members`,
    the sizes and ratios of those `written`; returns the declared total bytes to write."""
    if len(members) > max_files:
        raise ArchiveError(
            f"{zip_name} holds {len(members):,} entries, over the limit of {max_files:,}; upload a smaller "
            f"subset{FOLDER_HINT}."
        )
    total = sum(m.file_size for m in written)
    packed = sum(m.compress_size for m in written)
    if total > max_bytes:
        raise ArchiveError(
            f"{zip_name} unpacks to {total / 1024**3:.2f} GB, over the limit of {max_bytes / 1024**3:.2f} GB; "
            f"upload a smaller subset{FOLDER_HINT}."
        )
    if total > RATIO_CHECK_BYTES and total > max_ratio * max(packed, 1):
        raise ArchiveError(
            f"{zip_name} expands {total / max(packed, 1):.0f}x (limit {max_ratio:.0f}x), which looks like a "
            "zip bomb; upload the photos and labels as they are."
        )
    for m in members:
        problem = _member_problem(m)
        if problem:
            raise ArchiveError(f"{zip_name}: entry {m.filename!r} {problem}; refusing the archive. "
                               "Re-create the zip from the data set folder itself.")
    for m in written:
        if m.file_size > RATIO_CHECK_BYTES and m.file_size > max_ratio * max(m.compress_size, 1):
            raise ArchiveError(
                f"{zip_name}: entry {m.filename!r} expands {m.file_size / max(m.compress_size, 1):.0f}x "
                f"(limit {max_ratio:.0f}x), which looks like a zip bomb; refusing the archive."
            )
    return total


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, *, max_files: int = MAX_ZIP_FILES,
                     max_bytes: int = MAX_ZIP_BYTES, max_ratio: float = MAX_ZIP_RATIO,
                     include: Callable[[str], bool] | None = None) -> Path:
    """Extract an uploaded zip into `dest` (created; must be empty or absent) and return `dest`.

    Every member is checked before anything is written: no absolute paths, no "..", no symbolic links or
    special files (Unix mode in `external_attr`), no encryption, at most `max_files` entries and `max_bytes`
    uncompressed, and no compression ratio above `max_ratio` (zip bombs) for the archive or any member larger
    than RATIO_CHECK_BYTES. Bytes are counted again while writing, so a header that lies about its size cannot
    overshoot. `__MACOSX/` and `.DS_Store` entries are skipped, and so is every member `include(name)` refuses
    (they are checked for safety but neither written nor counted in the sizes). On any failure `dest` is removed.
    Raises ArchiveError (a ValueError) naming the offending member and the fix.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{zip_path.name}: not a zip file ({exc}); upload the data set as a .zip archive.") from exc
    except FileNotFoundError as exc:
        raise ArchiveError(f"{zip_path}: no such file; upload the zip again.") from exc
    with archive:
        members = archive.infolist()
        written = [m for m in members if include is None or include(m.filename)]
        total = _check_members(zip_path.name, members, written, max_files, max_bytes, max_ratio)
        members = written
        if dest.exists() and any(dest.iterdir()):
            raise ArchiveError(f"{dest} is not empty; extract into a new folder.")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        try:
            written = 0
            for m in members:
                name = m.filename.replace("\\", "/")
                if name.startswith(_SKIPPED_PREFIXES) or PurePosixPath(name).name in _SKIPPED_NAMES:
                    continue
                target = (root / name).resolve()
                if not target.is_relative_to(root):  # belt and braces after the name checks above
                    raise ArchiveError(f"{zip_path.name}: entry {m.filename!r} leaves the folder; "
                                       "refusing the archive.")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    out = open(target, "xb")
                except FileExistsError as exc:
                    raise ArchiveError(f"{zip_path.name}: entry {m.filename!r} appears twice; "
                                       "re-create the zip.") from exc
                with archive.open(m) as src, out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > min(total, max_bytes):
                            raise ArchiveError(f"{zip_path.name}: entries hold more data than their headers declare; "
                                               "refusing the archive.")
                        out.write(chunk)
        except zipfile.BadZipFile as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ArchiveError(f"{zip_path.name} is damaged ({exc}); create the zip again and re-upload it.") from exc
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def dataset_root(folder: str | os.PathLike) -> Path:
    """The data set inside an extracted zip: descends through lone wrapper folders ("export/", "my-set/").

    Stops above a folder named like a split or a split's part (train, valid, images, ...).
    """
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in _LAYOUT_FOLDERS:
            folder = entries[0]
        else:
            return folder


def has_layout(names: Iterable[str]) -> bool:
    """Whether zip member names can hold a labelled set (engine.data.dataset): a COCO json, or a folder with
    images/ beside labels/ or masks/. Judged from the headers, before a byte is written."""
    found: dict[tuple[str, ...], set[str]] = {}
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if parts and parts[-1] == COCO_FILE_NAME:
            return True
        folders = parts if name.endswith(("/", "\\")) else parts[:-1]
        for i, part in enumerate(folders):
            if part in ("images", "labels", "masks"):
                found.setdefault(folders[:i], set()).add(part)
    return any("images" in kinds and kinds & {"labels", "masks"} for kinds in found.values())


def check_upload(root: Path) -> None:
    """Open the labelled set in an extracted upload as training does (bad items skipped, quietly).

    Each split must open, except splits without a usable image while another one has some (Roboflow's
    empty test/). Raises ValueError (LabelError for unreadable labels or a file named outside the folder);
    a split with no usable image says why its first item was skipped.
    """
    splits = [None] if split_layout(root) is not None or not find_splits(root) else list(find_splits(root))
    empty = []
    for split in splits:  # None: one split, or the "no data set layout" error
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always", LabelWarning)
            try:
                open_dataset(root, split=split, skip_bad=True)
            except LabelError:
                raise
            except ValueError as exc:  # no layout, or no usable labelled image in this split
                reasons = [str(w.message) for w in skipped if issubclass(w.category, LabelWarning)]
                empty.append(ValueError(f"{str(exc).split(' (see the warnings')[0]}; first {reasons[0]}")
                             if reasons else exc)
    if len(empty) == len(splits):
        raise empty[0]


def remove_upload(path: str | os.PathLike, uploads_dir: str | os.PathLike) -> Path | None:
    """Delete the extracted upload that `path` lies in (its folder directly under `uploads_dir`) and return
    that folder; None (nothing deleted) when `path` is not inside `uploads_dir`."""
    uploads = Path(uploads_dir).resolve()
    path = Path(path).resolve()
    if path == uploads or not path.is_relative_to(uploads):
        return None
    folder = uploads / path.relative_to(uploads).parts[0]
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def upload_error(exc: Exception, folder: Path, zip_name: str) -> ArchiveError:
    """`exc` about an extracted upload, with the server's folder left out of its message."""
    message = str(exc)
    for prefix in {str(folder), str(folder.resolve())}:
        message = message.replace(prefix + os.sep, "").replace(prefix, ".")
    return ArchiveError(f"The uploaded zip {zip_name} is not a usable labelled set: {message}")


def extract_upload(zip_path: str | os.PathLike, uploads_dir: str | os.PathLike) -> Path:
    """Extract an uploaded data set zip into a fresh folder under `uploads_dir`; returns the data set root.

    Refused before a byte is written when its names hold no data set layout; only the members a labelled set
    is made of are written (`is_data_set_file`: photos, masks, labels, COCO json, data.yaml); after extraction
    the set is opened (`check_upload`), and when that fails the extracted folder is deleted at once. Errors
    name the zip and the entries inside it, never the server's folders.
    """
    zip_path = Path(zip_path)
    dest = Path(uploads_dir) / f"{zip_path.stem[:40]}-{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = None  # safe_extract_zip says what is wrong with it
    if names is not None and not has_layout(names):
        raise ArchiveError(f"The uploaded zip {zip_path.name} holds no labelled set: {_LAYOUTS_IN_ZIP}")
    safe_extract_zip(zip_path, dest, include=is_data_set_file)
    try:
        root = dataset_root(dest)
        check_upload(root)
    except (ValueError, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise upload_error(exc, dest, zip_path.name) from None
    return root


def as_data_path(path: str | os.PathLike, uploads_dir: str | os.PathLike) -> Path:
    """A labelled-set path as given; for a .zip, the root of its safely extracted copy; for
    `hf://datasets/OWNER/NAME`, the dataset repo downloaded into `uploads_dir` (offline: ConnectionError in
    seconds)."""
    text = str(path).strip()
    if not text:
        raise ValueError("No data set given: tick a shared set, upload a .zip, or type a folder path.")
    if text.startswith("hf://datasets/"):  # a dataset repo on the Hub: fetched into the uploads folder
        from engine.hub import fetch_hub_dataset

        dest = Path(uploads_dir) / f"hub-{uuid.uuid4().hex[:8]}"
        return dataset_root(fetch_hub_dataset(text, dest))
    p = Path(text).expanduser()
    if p.suffix.lower() == ".zip":
        return extract_upload(p, uploads_dir)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder; check the data set path (it is read on the server).")
    return p
