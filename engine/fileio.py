"""Crash-safe writes (a `kill -9` at any moment leaves either the old file or folder or the new one), and
rewriting the text files of a folder."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths atomically
_AT_FDCWD = -100


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, fsync, then rename over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; written files should read like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_path(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path, line: str) -> None:
    """Append one line and fsync (for metrics.jsonl: a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file such as a run's metrics.jsonl; [] when the file does not exist.

    A line that is not JSON (one cut short by a crash mid-append) is skipped, so the rest still loads.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def replace_dir(dst) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then swap it in for `dst` in one atomic step.

        with replace_dir(run / "best") as tmp:
            model.save_pretrained(tmp)

    Every file is fsynced before the swap. On Linux the swap is renameat2(RENAME_EXCHANGE), so `dst` is
    never missing; elsewhere the old folder is renamed aside first and `recover_dir` puts it back if a crash
    fell between the two renames.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dst)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_path(f)
        _fsync_path(tmp)
        if dst.exists() and _exchange(tmp, dst):
            shutil.rmtree(tmp)
        else:
            old = dst.with_name(f".{dst.name}.old")
            if dst.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_path(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(dst) -> None:
    """If a crash left `dst` missing but its renamed-aside copy present, put the copy back."""
    dst = Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    if not dst.exists() and old.is_dir():
        os.replace(old, dst)


TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".csv", ".html")


def rewrite_text_files(folder, rewrite: Callable[[str], str], suffixes=TEXT_SUFFIXES) -> list[Path]:
    """Apply `rewrite` to every text file under `folder` (by suffix; links not followed); returns the files
    that changed. A public app scrubs server paths from what it hands out this way (run zips, exports)."""
    changed = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() not in suffixes or path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
