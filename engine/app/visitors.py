"""Whose files are whose on a public app: each visitor's own folder, and which visitors count as live.

A visitor is the signed-in Hugging Face user, else the browser session (a reloaded page is a new session; each
`gradio_client.Client` is one). In public mode everything a visitor makes goes into their own folder,
`<work dir>/visitors/<key>/`, key a hash of who they are, so the folder's name says nothing about them and no
other visitor's request can name it:

    runs/     training runs        onnx/     ONNX exports       uploads/  extracted data set zips
    masks/    one folder per /segment or /segment_batch call    exports/  zips made for download
    sets/     label sets (photos and corrected masks kept for teaching)

The pickers list the server's models (read-only to everyone) and the asking visitor's own runs and exports,
nobody else's. Locally (one user, public mode off) the app keeps its shared folders: runs in checkpoints/,
exports in export/, the rest in the work dir. A visitor counts as live while they made a request within
`idle_s` (the mtime of `.seen` in their folder); the disk clean-up never deletes a live visitor's files.
Pure file-system code: no gradio, no torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SEEN_FILE", "VISITORS_DIR", "Workspace", "visitor_key", "local_workspace", "visitor_workspace",
           "live_visitors", "forget_visitor"]

VISITORS_DIR = "visitors"  # under the work dir
SEEN_FILE = ".seen"  # its mtime: the visitor's last request
# The folders of a workspace that hold what the visitor made (each entry inside is one thing to keep or prune).
_KINDS = ("runs", "onnx", "uploads", "masks", "exports", "sets")


@dataclass(frozen=True)
class Workspace:
    """Where one request's files go.

    runs, exports: where new runs and ONNX exports are written (and, for a visitor, listed); uploads: extracted
    data set zips; calls: the parent of per-request folders (`call_dir`); sets: label sets. root: the visitor's
    own folder, or None locally (shared folders); owner: who asked (None: the local user or a test).
    """

    runs: Path
    exports: Path
    uploads: Path
    calls: Path
    sets: Path
    root: Path | None = None
    owner: str | None = None

    @property
    def folders(self) -> list[Path]:
        """The folders whose entries belong to this visitor (empty locally: nothing there is a visitor's)."""
        return [self.root / kind for kind in _KINDS] if self.root is not None else []

    def call_dir(self, kind: str) -> Path:
        """A fresh folder for one request's files: calls/<kind>/<random id> (kind: "masks" or "exports")."""
        if kind not in ("masks", "exports"):
            raise ValueError(f"call_dir kind must be 'masks' or 'exports', got {kind!r}.")
        path = self.calls / kind / uuid.uuid4().hex[:12]
        path.mkdir(parents=True, exist_ok=True)
        return path


def visitor_key(who: str) -> str:
    """The folder name of a visitor: 16 hex digits of a hash of who they are (a user name or session id)."""
    return hashlib.sha256(who.encode("utf-8")).hexdigest()[:16]


def local_workspace(checkpoints_dir: Path, export_dir: Path, work_dir: Path, sets_dir: Path) -> Workspace:
    """The one user's workspace when the app is not public: today's shared folders (label sets in `sets_dir`,
    which outlives the work dir)."""
    return Workspace(runs=Path(checkpoints_dir), exports=Path(export_dir), uploads=Path(work_dir) / "uploads",
                     calls=Path(work_dir), sets=Path(sets_dir))


def visitor_workspace(work_dir: Path, who: str, *, now: float | None = None) -> Workspace:
    """The visitor's own workspace (created on first use), marked as seen now."""
    root = Path(work_dir) / VISITORS_DIR / visitor_key(who)
    for kind in _KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
    seen = root / SEEN_FILE
    seen.touch()
    if now is not None:
        os.utime(seen, (now, now))
    return Workspace(runs=root / "runs", exports=root / "onnx", uploads=root / "uploads", calls=root,
                     sets=root / "sets", root=root, owner=who)


def live_visitors(work_dir: Path, idle_s: float, *, now: float | None = None) -> list[Path]:
    """The visitor folders whose visitor made a request within the last `idle_s` seconds."""
    now = time.time() if now is None else now
    live = []
    for root in sorted((Path(work_dir) / VISITORS_DIR).glob("*")):
        try:
            if now - (root / SEEN_FILE).stat().st_mtime <= idle_s:
                live.append(root)
        except FileNotFoundError:
            continue
    return live


def forget_visitor(work_dir: Path, who: str) -> bool:
    """Delete a visitor's folder (an anonymous session that ended: nobody can reach its files again)."""
    root = Path(work_dir) / VISITORS_DIR / visitor_key(who)
    if root.is_dir() and not root.is_symlink():
        shutil.rmtree(root, ignore_errors=True)
        return True
    return False
