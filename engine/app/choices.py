"""The models a picker offers, and the short name a model gets in tables and folder names."""

from __future__ import annotations

import os
from pathlib import Path

from engine.paths import is_onnx_export

__all__ = ["model_choices", "model_label", "own_choices", "public_choices"]


def model_label(source: str, precision: str = "fp32") -> str:
    """A short name for a (source, precision) pair: folder name (run/best -> run), Hub id or "auto".

    "/x/checkpoints/run-1/best" -> "run-1"; ("CIDAS/clipseg-rd64-refined", "bf16") -> "... (bf16)".
    """
    p = Path(str(source))
    name = p.parent.name if p.name in ("best", "last") else (p.name if p.is_absolute() or p.exists() else str(source))
    return f"{name} ({precision})" if precision != "fp32" else name


def model_choices(checkpoints_dir: str | os.PathLike | None = None, export_dir: str | os.PathLike | None = None, *,
                  torch_only: bool = False, default: str | None = None) -> list[tuple[str, str]]:
    """(label, source) for the pickers (`engine.models.list_models`).

    torch_only drops ONNX exports; `default`, when given and not listed, comes first as "<label> (default)".
    """
    # Deferred: engine.models loads torch, and `import app` must not (tests/test_app.py).
    from engine.models import list_models

    choices = list_models(checkpoints_dir, export_dir)
    if torch_only:
        choices = [(label, src) for label, src in choices if not is_onnx_export(src)]
    if default is not None and default not in [src for _, src in choices]:
        choices.insert(0, (f"{model_label(default)} (default)", default))
    return choices


def own_choices(runs_dir: str | os.PathLike, export_dir: str | os.PathLike, *, torch_only: bool = False
                ) -> list[tuple[str, str]]:
    """A public visitor's own runs and exports, ("my run: NAME" / "my export: NAME", folder), apart from the
    server's ("run: NAME"), so that a visitor's run may share a name with a server's and neither hides the other."""
    from engine.models import list_models  # deferred like model_choices'

    mine = (Path(runs_dir).resolve(), Path(export_dir).resolve())
    own = [(f"my {label}".replace("my onnx:", "my export:"), src) for label, src in list_models(runs_dir, export_dir)
           if Path(src).is_absolute() and Path(src).resolve().parent in mine]
    return [(label, src) for label, src in own if not (torch_only and is_onnx_export(src))]


def public_choices(choices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pickers of a public app: a folder's value is its label ("run: my-run"), so the page names no server
    path; `auto` and Hub ids keep theirs. `engine.app.public.allowed_models` maps a label back to its folder."""
    return [(label, label if Path(source).is_absolute() else source) for label, source in choices]
