"""Export a model to ONNX from the Export tab: the export, its speed against torch on one photo, and a zip.

`engine.onnx` (onnx, onnxruntime) is imported when an export runs, so the app starts without it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.app.choices import model_label
from engine.fileio import rewrite_text_files

if TYPE_CHECKING:
    from engine.models.cache import ModelCache

__all__ = ["EXPORT_HEADERS", "ExportResult", "time_predict", "speed_rows", "export_model"]

EXPORT_HEADERS = ["measure", "value"]


@dataclass
class ExportResult:
    """An export: its folder, manifest, the CLI's parity report, [measure, value] rows, and a zip of the folder."""

    out_dir: Path
    manifest: dict
    report: str
    rows: list[list]
    zip_path: Path


def _slug(text: str) -> str:
    """A folder name for a model name: letters, digits, '.', '_' and '-' kept as they are (case too, so that
    "Drywall-Starter" and "drywall-starter", or "a.b" and "a-b", get folders of their own)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def export_folder(export_dir: str | os.PathLike, name: str, source_name: str) -> Path:
    """export_dir/<name>, or <name>-2, -3, ... when that folder holds the export of another model.

    The same model exported again replaces its own folder; another model never replaces it (its manifest's
    `source` tells whose export a folder is).
    """
    from engine.onnx.runtime import read_manifest

    export_dir = Path(export_dir)
    candidate, n = export_dir / name, 1
    while candidate.exists():
        try:
            if read_manifest(candidate).get("source") == source_name:
                return candidate
        except (OSError, ValueError):
            pass  # not a readable export: never overwritten either
        n += 1
        candidate = export_dir / f"{name}-{n}"
    return candidate


def time_predict(segmenter, image, prompts: Sequence[str], repeats: int = 3) -> float:
    """Median milliseconds of `segmenter.predict(image, prompts)` after one warm-up call."""
    segmenter.predict(image, prompts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        segmenter.predict(image, prompts)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def speed_rows(torch_segmenter, onnx_segmenters: Mapping[str, object], example, prompts: Sequence[str]
               ) -> list[list]:
    """[measure, value] rows: torch ms per photo, then ms and speed-up of each ONNX precision (name -> segmenter)."""
    torch_ms = time_predict(torch_segmenter, example, prompts)
    rows = [[f"torch fp32 ms / photo ({len(prompts)} prompts)", round(torch_ms, 1)]]
    for precision, segmenter in onnx_segmenters.items():
        ms = time_predict(segmenter, example, prompts)
        rows.append([f"onnx {precision} ms / photo", round(ms, 1)])
        rows.append([f"onnx {precision} speed-up vs torch", f"{torch_ms / max(ms, 1e-6):.2f}x"])
    return rows


def _backends():
    """(engine.onnx.export, engine.onnx.runtime, engine.models), imported on first export.

    Deferred: they load torch and onnx, and `import app` must not (tests/test_app.py). A missing onnx package
    becomes a RuntimeError that says what to install.
    """
    import engine.models as models

    try:
        from engine.onnx import export, runtime
    except ImportError as exc:
        raise RuntimeError(f"ONNX export is not available in this installation ({exc}); install requirements.txt "
                           "(onnx, onnxruntime, onnxscript) and restart the app.") from exc
    return export, runtime, models


def export_model(source: str, export_dir: str | os.PathLike, *, int8: bool = False, cache: ModelCache | None = None,
                 example: str | os.PathLike | None = None, prompts: Sequence[str] = ("segment crack",),
                 zip_dir: str | os.PathLike | None = None, progress: Callable[[float, str], None] | None = None,
                 source_name: str | None = None, scrub: Callable[[str], str] | None = None) -> ExportResult:
    """Export a model to ONNX under `export_dir`, time it against torch on one photo, and zip the folder.

    The folder is export_dir/<model>-<fp32|int8> (an int8 export also holds the fp32 graphs), with a suffix
    when that folder holds another model's export (`export_folder`). source_name: what the manifest and the
    report call the source (a public app passes the picker's label; default: the source as given); scrub:
    applied to the export's text files before they are zipped (a public app's removal of server paths). Rows:
    milliseconds per photo (all `prompts`) on `example` for torch fp32 and each exported precision, then the
    manifest's parity figures and graph sizes (`engine.onnx.export.report_rows`, as the CLI's report shows them).
    """
    onnx_export, onnx_runtime, models = _backends()
    resolved = models.resolve_source(source)
    if resolved.kind == "onnx":
        raise ValueError(f"{source} is already an ONNX export; pick a PyTorch model or training run to export.")
    name = _slug(resolved.label.split("/")[-1] if resolved.kind == "hub" else model_label(str(resolved.path)))
    source_name = source_name or str(source)
    out_dir = export_folder(export_dir, f"{name}-{'int8' if int8 else 'fp32'}", source_name)
    manifest = onnx_export.export_onnx(str(resolved.path), out_dir, int8=int8, progress=progress,
                                       source_name=source_name)
    if cache is not None:
        cache.evict(out_dir)  # a re-export replaces the graphs a cached session was reading
    rows = []  # speed first: the parity figures below it are the same on every machine
    if example is not None:
        if progress is not None:
            progress(1.0, "timing torch and onnxruntime on one photo")
        torch_seg = cache.get(source) if cache is not None else models.load_segmenter(source)
        onnx_segs = {p: onnx_runtime.OnnxSegmenter(out_dir, int8=p == "int8") for p in
                     (["fp32", "int8"] if int8 else ["fp32"])}
        rows += speed_rows(torch_seg, onnx_segs, example, prompts)
    rows += [list(row) for row in onnx_export.report_rows(manifest, out_dir)]
    if scrub is not None:
        rewrite_text_files(out_dir, scrub)
    zip_dir = Path(zip_dir or tempfile.mkdtemp(prefix="drywall-export-"))
    zip_dir.mkdir(parents=True, exist_ok=True)
    zip_path = Path(shutil.make_archive(str(zip_dir / out_dir.name), "zip", root_dir=out_dir))
    return ExportResult(out_dir=out_dir, manifest=dict(manifest), report=onnx_export.format_report(manifest, out_dir),
                        rows=rows, zip_path=zip_path)
