"""`load_segmenter(source)`: the one way from a user's model string to a ready segmenter, and the model list.

Everything that takes a model (the CLI, the app, evaluation, export) passes the user's string here, so the same
strings work everywhere (see `engine.models.sources`). Torch folders give an `engine.segmenter.Segmenter`,
ONNX exports an `engine.onnx.runtime.OnnxSegmenter`.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ModelSourceError
from engine.models.io import load_clipseg, read_meta
from engine.models.sources import DEFAULT_HUB_ID, Source, resolve_source
from engine.paths import CHECKPOINTS_DIR, EXPORT_DIR, STARTER_DIR, is_model_folder, is_onnx_export
from engine.segmenter import Segmenter

DEFAULT_THRESHOLD = 0.4
# What `load_segmenter` runs torch models in unless told otherwise: "auto" = the faster of fp32 and bf16 matmuls
# as timed on this machine (engine.precision; CPUs differ: bf16 was 2.3x faster on one, 2x slower on another).
# bf16 is a candidate because its masks agree with fp32: mean IoU 0.998 on the bundled model (retrained with
# negatives) over the 165 valid photos and both prompts at threshold 0.45 (rule: >= 0.97). Pass precision="fp32"
# for bit-for-bit reference numbers.
DEFAULT_TORCH_PRECISION = "auto"
PRECISIONS = (None, "auto", "fp32", "bf16", "int8")


def load_segmenter(source: str | os.PathLike = "auto", *, threads: int | None = None, precision: str | None = None,
                   device: str = "cpu"):
    """A ready segmenter (`engine.segmenter.Segmenter`, or `engine.onnx.runtime.OnnxSegmenter` for exports).

    precision: None for the source's default: `DEFAULT_TORCH_PRECISION` for torch models; for an ONNX export
    the precision it was exported with (int8 when made with --int8 and its masks agreed with fp32, see its
    manifest.json). Or name one: "fp32"; "bf16" (torch only); "int8" (exports made with --int8); "auto"
    (torch: the faster of fp32 and bf16 as measured on this machine, see engine.precision; exports: their
    default).
    threads: onnxruntime's intra-op threads for an export (per session; default all cores). Torch models run
    with the process's torch thread count, which the entry point (CLI, app, benchmark child) sets once.
    """
    resolved = source if isinstance(source, Source) else resolve_source(source)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(str, PRECISIONS))}, not {precision!r}.")
    if resolved.kind == "onnx":
        # onnxruntime loads only for exports: a heavy optional dependency a torch model never needs.
        from engine.onnx.runtime import OnnxSegmenter

        if precision == "bf16":
            raise ModelSourceError(f"{resolved.path} is an ONNX export, which runs fp32 or int8; bf16 is for torch "
                                   "model folders.")
        int8 = None if precision in (None, "auto") else precision == "int8"
        return OnnxSegmenter(resolved.path, threads=threads, int8=int8)
    if precision == "int8":
        raise ModelSourceError(
            f"int8 runs through ONNX: export the model first (python -m engine export --model {source} --out "
            "export/NAME --int8) and load export/NAME."
        )
    precision = precision or DEFAULT_TORCH_PRECISION
    model, tokenizer, processor = load_clipseg(resolved.path)
    meta = read_meta(resolved.path)
    return Segmenter(
        model, tokenizer, processor, threshold=float(meta.get("threshold", DEFAULT_THRESHOLD)),
        name=resolved.label, threads=threads, precision=precision, device=device, meta=meta,
    )


BUNDLED_LABEL = "bundled model, trained on walls (drywall-starter)"
ZERO_SHOT_LABEL = f"CLIPSeg zero-shot: any prompt, not trained on walls ({DEFAULT_HUB_ID}, needs the Hub)"


def list_models(checkpoints_dir=None, export_dir=None) -> list[tuple[str, str]]:
    """Model choices for pickers: (label, source) for the bundled model (trained on walls: the one with evidence
    for this job), zero-shot CLIPSeg from the Hub, `auto` (the Hub model when reachable, else the bundled one:
    the starting point for training), then each run and each export."""
    checkpoints_dir = Path(checkpoints_dir or CHECKPOINTS_DIR)
    export_dir = Path(export_dir or EXPORT_DIR)
    choices = []
    if is_model_folder(STARTER_DIR) or (STARTER_DIR / "best").is_dir():
        choices.append((BUNDLED_LABEL, str(STARTER_DIR)))
    choices += [(ZERO_SHOT_LABEL, DEFAULT_HUB_ID), (f"auto ({DEFAULT_HUB_ID}, else the bundled model)", "auto")]
    for folder, kind in ((checkpoints_dir, "run"), (export_dir, "onnx")):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if path.resolve() == STARTER_DIR.resolve():
                continue
            usable = is_onnx_export(path) if kind == "onnx" else (
                is_model_folder(path / "best") or is_model_folder(path / "last") or is_model_folder(path))
            if usable:
                choices.append((f"{kind}: {path.name}", str(path)))
    return choices
