"""A small thread-safe LRU of loaded segmenters, shared by the app's requests.

Keys are (source, precision) as the user gave them; loading goes through `engine.models.load_segmenter`
unless a `loader` is passed (tests pass a fake one). A local model saved again since it was loaded (a run that
saved a new best, an export made again) is loaded again on the next `get`, whoever asks (`source_stamp`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import engine.models as models  # the package, not its names: engine.models may re-export this module
from engine.paths import MANIFEST_FILE, META_FILE, in_repo, is_model_folder, is_onnx_export

__all__ = ["ModelCache", "is_onnx_source", "source_stamp"]

# The files whose change means "a new model here": weights, graphs and the settings read with them.
_STAMPED = ("*.safetensors", "*.bin", "*.onnx", MANIFEST_FILE, META_FILE, "config.json", "preprocessor_config.json")


def _default_loader(source: str, precision: str | None):
    return models.load_segmenter(source, precision=precision)


def is_onnx_source(source) -> bool:
    """True for an ONNX export folder (manifest.json), judged from the path alone (no loading, no network).

    A relative path that does not exist from the working directory is read from the repository root, as
    `engine.models.resolve_source` does.
    """
    p = Path(str(source).strip()).expanduser()
    return is_onnx_export(p if p.is_absolute() or p.exists() else in_repo(p))


def source_stamp(source) -> tuple | None:
    """(name, mtime_ns, size) of each model file of a local source, as `resolve_source` picks the folder (a run's
    best/, else last/, else the folder itself); None for `auto`, a Hub id or a path that is not a folder."""
    p = Path(str(source).strip()).expanduser()
    p = p if p.is_absolute() or p.exists() else in_repo(p)
    if not p.is_dir():
        return None
    folder = next((f for f in (p / "best", p / "last") if is_model_folder(f)), p)
    stamp = []
    for pattern in _STAMPED:
        for f in folder.glob(pattern):
            try:
                info = f.stat()
            except FileNotFoundError:
                continue
            stamp.append((f.name, info.st_mtime_ns, info.st_size))
    return tuple(sorted(stamp))


class ModelCache:
    """Loaded segmenters, the `maxsize` most recently used, keyed by (source, precision).

    precision None means the source's default (`engine.models.load_segmenter`): torch models then share the
    entry of their default precision, ONNX exports run at the precision they were exported with.
    `get` loads at most once per key even when several requests ask at the same moment (a lock per key), and
    again when the source's files changed since (`source_stamp`); `evict` drops every entry whose source is, or
    lies inside, a folder.
    """

    def __init__(self, maxsize: int = 4, loader: Callable[[str, str], object] | None = None):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}.")
        self.maxsize = maxsize
        self.loader = loader or _default_loader
        self._items: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._stamps: dict[tuple[str, str], tuple | None] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    @staticmethod
    def key(source, precision: str | None = None) -> tuple[str, str | None]:
        source = str(source).strip() or "auto"
        if precision is None and not is_onnx_source(source):
            precision = models.DEFAULT_TORCH_PRECISION
        return (source, precision)

    def get(self, source, precision: str | None = None):
        key = self.key(source, precision)
        stamp = source_stamp(key[0])
        with self._lock:
            if key in self._items and self._stamps.get(key) == stamp:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another request may have loaded it while we waited
                if key in self._items and self._stamps.get(key) == stamp:
                    self._items.move_to_end(key)
                    return self._items[key]
            model = self.loader(*key)
            with self._lock:
                self._items[key] = model
                self._stamps[key] = stamp
                self._items.move_to_end(key)
                while len(self._items) > self.maxsize:
                    old, _ = self._items.popitem(last=False)
                    self._stamps.pop(old, None)
                self._key_locks.pop(key, None)
            return model

    def evict(self, path: str | os.PathLike) -> list[tuple[str, str]]:
        """Drop the entries whose source is `path` or lies inside it; returns the dropped keys."""
        target = _resolved(path)
        with self._lock:
            dropped = [k for k in self._items if k[0] == str(path) or _inside(_resolved(k[0]), target)]
            for k in dropped:
                del self._items[k]
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items


def _resolved(path) -> Path | None:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def _inside(path: Path | None, folder: Path | None) -> bool:
    return path is not None and folder is not None and (path == folder or path.is_relative_to(folder))
