"""The app's own disk: what its folders hold, pruning the oldest past a cap, and its work dir's life.

The app writes masks, uploads and export zips under its work dir and, on a public server, runs, ONNX exports and
the feature cache too. `prune` deletes whole entries (each file or folder directly inside one of the folders it
is given), oldest first, until they fit a cap. Whatever a caller asks, `may_delete` is the one rule it deletes by:
only an entry directly inside one of the folders it was given (no folder reached through a link, no link
followed), never a tracked file of the repository or a folder holding one, never a shipped model, never what
`keep` names (the default model, a running job's run and data, a live visitor's folder). `make_work_dir` gives the
app a fresh work dir marked with its process id, `remove_work_dir` deletes it at exit, and
`stale_work_dirs` finds those that a killed app (kill -9: no exit hook runs) left behind. Pure file-system
functions: no gradio, no torch.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.paths import CHECKPOINTS_DIR, EXPORT_DIR, REPO_ROOT, SHIPPED_MODELS, in_repo

__all__ = ["WORK_DIR_PREFIX", "Entry", "bytes_used", "entries", "may_delete", "never_deleted", "prune", "job_paths",
           "make_work_dir", "remove_work_dir", "stale_work_dirs"]

WORK_DIR_PREFIX = "drywall-qa-app-"  # tempfile.mkdtemp(prefix=...) of each app process
PID_FILE = ".app-pid"  # inside a work dir: the process that made it


@dataclass(frozen=True)
class Entry:
    """One thing `prune` may delete: a file or folder directly inside a pruned folder.

    size: bytes of every file under it (links count as themselves, never followed); mtime: the newest
    modification time under it, so a run still being written counts as new.
    """

    path: Path
    size: int
    mtime: float


def _measure(path: Path) -> tuple[int, float]:
    """(bytes, newest mtime) under `path`, links not followed; files that vanish meanwhile count as 0."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0, 0.0
    folder = path.is_dir() and not path.is_symlink()
    size, newest = (0 if folder else info.st_size), info.st_mtime
    if folder:
        for folder, dirs, files in os.walk(path):  # os.walk does not follow links by default
            for name in (*dirs, *files):
                try:
                    child = os.lstat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                size += child.st_size if name in files else 0
                newest = max(newest, child.st_mtime)
    return size, newest


def entries(folders: Iterable[str | os.PathLike]) -> list[Entry]:
    """Every entry directly inside each existing folder, oldest first (folders that are absent, or are links,
    are skipped: a link could lead anywhere)."""
    found = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            size, mtime = _measure(path)
            found.append(Entry(path, size, mtime))
    return sorted(found, key=lambda e: (e.mtime, str(e.path)))


def bytes_used(folders: Iterable[str | os.PathLike]) -> int:
    """Bytes of every file under the folders (links counted as themselves, never followed)."""
    return sum(e.size for e in entries(folders))


@functools.lru_cache(maxsize=1)
def _tracked_files() -> tuple[Path, ...] | None:
    """The repository's tracked files (`git ls-files`), resolved; None when git cannot say (no git, no .git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n for n in out.stdout.decode("utf-8", "replace").split("\0") if n]
    return tuple((REPO_ROOT / n).resolve() for n in names) or None


# Inside the repository only these hold what the app itself writes (git-ignored runs, exports, caches); nothing
# else there (the source, .git, a virtual environment) is ever the app's to delete.
_APP_FOLDERS_IN_REPO = (CHECKPOINTS_DIR, EXPORT_DIR, REPO_ROOT / ".cache")


def _in_repo_but_not_the_apps(resolved: Path) -> bool:
    repo = REPO_ROOT.resolve()
    if not resolved.is_relative_to(repo):
        return False
    return not any(resolved.is_relative_to(f.resolve()) and resolved != f.resolve() for f in _APP_FOLDERS_IN_REPO)


def never_deleted() -> list[Path]:
    """What no clean-up deletes, whoever asks: the shipped models and the repository's tracked files (the
    whole repository when git cannot list them)."""
    tracked = _tracked_files()
    return [*(p.resolve() for p in SHIPPED_MODELS), *(tracked if tracked is not None else [REPO_ROOT.resolve()])]


def _protected(path: Path, keep: list[Path]) -> bool:
    """An entry stays when it is a kept path, lies inside one, or holds one."""
    resolved = path.parent.resolve() / path.name  # the entry itself, not what a link points at
    return any(resolved == k or resolved.is_relative_to(k) or k.is_relative_to(resolved) for k in keep)


def may_delete(path: str | os.PathLike, folders: Iterable[str | os.PathLike],
               keep: Iterable[str | os.PathLike] = ()) -> bool:
    """The rule every clean-up deletes by: `path` is an entry directly inside one of `folders` (the app's own
    folders, none of them a link); inside the repository, only inside checkpoints/, export/ or .cache/; never a
    `.git` folder or anything in one; and neither is, lies inside, nor holds a kept path or `never_deleted()`."""
    path = Path(path)
    parents = {Path(f).resolve() for f in folders if Path(f).is_dir() and not Path(f).is_symlink()}
    resolved = path.parent.resolve() / path.name
    if path.parent.resolve() not in parents or ".git" in resolved.parts or _in_repo_but_not_the_apps(resolved):
        return False
    return not _protected(path, [*(Path(k).resolve() for k in keep), *never_deleted()])


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune(folders: Iterable[str | os.PathLike], max_bytes: int, *, keep: Iterable[str | os.PathLike | None] = (),
          max_age_s: float | None = None, min_age_s: float = 60.0, now: float | None = None) -> list[Path]:
    """Delete the oldest entries of `folders` until they hold at most `max_bytes`; returns what was deleted.

    folders: the app's own folders (the work dir's uploads/, masks/, exports/; runs and exports on a public
        server). Only entries directly inside them are deleted, whole; a link is deleted as a link.
    keep: paths never deleted, nor any entry inside or above them (the default model, a running job's run, a
        live visitor's folder); the shipped models and tracked files are kept whatever is passed (`may_delete`).
    max_age_s: entries older than this go too, whatever the cap (the app's start clears old uploads).
    min_age_s: entries newer than this stay (a request still writing its files), even past the cap.
    """
    now = time.time() if now is None else now
    folders = list(folders)
    kept = [k for k in keep if k]
    found = entries(folders)  # one walk: the total and the candidates come from the same measurement
    candidates = [e for e in found if now - e.mtime >= min_age_s and may_delete(e.path, folders, kept)]
    total = sum(e.size for e in found)
    deleted = []
    for entry in candidates:  # oldest first
        too_old = max_age_s is not None and now - entry.mtime > max_age_s
        if total <= max_bytes and not too_old:
            continue
        _delete(entry.path)
        total -= entry.size
        deleted.append(entry.path)
    return deleted


def job_paths(run_dir: str | os.PathLike | None) -> list[Path]:
    """What a training job uses, for `prune(keep=...)`: its run folder, and the data sets and starting model
    its config.json names (an upload it trains from must outlive the job)."""
    if not run_dir:
        return []
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return [run_dir]
    data = [d.get("path") for d in config.get("data") or [] if isinstance(d, dict)]
    # config.json stores paths relative to the repository (train.checkpoint); in_repo reads them back
    return [run_dir, *(in_repo(p) for p in (*data, config.get("model")) if isinstance(p, str) and p)]


def make_work_dir(parent: str | os.PathLike | None = None) -> Path:
    """A fresh work dir for this app process (tempfile.mkdtemp), marked with its process id."""
    path = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=parent))
    (path / PID_FILE).write_text(str(os.getpid()))
    return path


def remove_work_dir(path: str | os.PathLike) -> None:
    """Delete a work dir made by `make_work_dir` (the app's exit hook); anything else is left alone."""
    path = Path(path)
    if path.name.startswith(WORK_DIR_PREFIX) and (path / PID_FILE).is_file() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def stale_work_dirs(parent: str | os.PathLike | None = None) -> list[Path]:
    """Work dirs under `parent` (default: the temp dir) whose app process is gone (killed without its exit
    hook); a dir without a readable process id is not the app's and is left out."""
    parent = Path(parent or tempfile.gettempdir())
    stale = []
    for path in sorted(parent.glob(f"{WORK_DIR_PREFIX}*")):
        try:
            pid = int((path / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid) and not path.is_symlink():
            stale.append(path)
    return stale
