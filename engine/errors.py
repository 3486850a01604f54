"""The engine's exception types, in one place.

Each message names what was refused and how to fix it; the CLI prints it as one line, the app as a gr.Error.
ValueError subclasses are the user's to fix (a path, a file, a setting); RuntimeError ones are the state of
the process (a job already running, an export that failed its parity check).
"""

from __future__ import annotations

import os
from pathlib import Path


class ModelSourceError(ValueError):
    """A model source that cannot be loaded; the message says what to use instead."""


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (or "<uploaded image>") and how to fix it."""


class LabelError(ValueError):
    """A label that cannot be used; the message names the file, the line (or annotation) and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str, line: int | str | None = None):
        self.path, self.reason, self.line = Path(path), reason, line
        where = "" if line is None else f" line {line}" if isinstance(line, int) else f" {line}"
        super().__init__(f"{path}{where}: {reason}")

    def __reduce__(self):  # keep it picklable (data-loader worker processes) despite the custom __init__
        return (type(self), (self.path, self.reason, self.line))


class LabelWarning(UserWarning):
    """A bad item was skipped (skip_bad=True) or a label file has no image."""


class ArchiveError(ValueError):
    """An uploaded zip that is refused or unreadable; the message says why and what to upload instead."""


class ExportError(RuntimeError):
    """An export whose graphs do not reproduce the torch model; nothing was written."""


class JobRunning(RuntimeError):
    """A training job is already running in this process; one runs at a time."""


class TrainingStopped(Exception):
    """Raised inside the training loop when Stop was pressed (or the job's time limit passed); the loop catches
    it and reports "stopped", keeping the last finished epoch or, with none, removing the run folder it made."""

    def __init__(self, message: str = "training was stopped (Stop pressed or the time limit reached)"):
        super().__init__(message)
