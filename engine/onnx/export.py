"""Export a model to ONNX: three graphs, a manifest, and a parity check in onnxruntime before anything is kept.

    manifest = export_onnx("checkpoints/drywall-starter", "export/starter", int8=True)

The text encoder, the truncated vision encoder and the decoder are exported separately (see
`engine.onnx.runtime` for the folder layout), so the runtime does what the torch `Segmenter` does: vision once
per photo, text once per prompt. The folder is built in a temporary sibling and renamed into place only after
onnxruntime reproduced the torch logits (max |delta logit| <= 1e-3 on random pixels and sample photos): a failed
export leaves the previous folder as it was. `--int8` adds dynamically quantized encoders (`*.int8.onnx`,
onnxruntime.quantization) with their agreement with fp32 (mean mask IoU) in the manifest.
"""

from __future__ import annotations

import datetime
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import ExportError, ModelSourceError
from engine.fileio import replace_dir
from engine.images import list_images, load_image
from engine.metrics import confusion, iou
from engine.models import load_segmenter, resolve_source
from engine.onnx.graphs import OPSET, export_graphs, quantize_graph
from engine.onnx.runtime import (
    FORMAT,
    FORMAT_VERSION,
    GRAPHS,
    MANIFEST_FILE,
    OnnxSegmenter,
    graph_file,
    read_manifest,
    sha256_file,
)
from engine.paths import DEFAULT_PROMPTS, EXAMPLES_DIR, portable

PARITY_TOL = 1e-3  # max |delta logit| allowed between onnxruntime fp32 and torch fp32
INT8_MIN_IOU = 0.95  # int8 becomes the export's default precision only if its masks agree this well with fp32
# What --int8 quantizes, per graph: the text encoder's token table too (Gather: 49408 x 512 floats in CLIP, half
# the file); the decoder is small (~1.5% of the vision work per prompt) and stays fp32.
INT8_OPS = {"text_encoder": ("MatMul", "Gemm", "Gather"), "vision_encoder": ("MatMul", "Gemm")}
SAMPLE_PHOTOS = EXAMPLES_DIR  # photos added to the parity sample when present

Progress = Callable[[float, str], None]  # progress(fraction done in [0, 1], what is being done)


# ---------------------------------------------------------------------------------------------------------
# Parity


def sample_inputs(seg, images: Sequence | None = None, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """pixel_values (B, 3, S, S) for the parity check: `n_random` random-pixel photos plus `images`.

    images: paths or PIL images; None means the photos in examples/ (when the folder is there).
    """
    if images is None:
        images = list_images([SAMPLE_PHOTOS])[:4] if SAMPLE_PHOTOS.is_dir() else []
    rng = np.random.default_rng(seed)
    s = seg.input_size
    photos = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for _ in range(n_random)]
    photos += [load_image(im, max_side=2048) for im in images]
    return seg.preprocess(photos).numpy()


def model_prompts(meta: dict) -> list[str]:
    """The prompts a model was trained for (`drywall_qa.json`: a list, or {name: [synonyms]}), else defaults."""
    prompts = meta.get("prompts") if isinstance(meta, dict) else None
    if isinstance(prompts, dict):
        prompts = [p for group in prompts.values() for p in ([group] if isinstance(group, str) else group)]
    if isinstance(prompts, str):
        prompts = [prompts]
    out = [p for p in (prompts or []) if isinstance(p, str) and p.strip()]
    return list(dict.fromkeys(out)) or list(DEFAULT_PROMPTS)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of the same shape (1.0 when both are empty)."""
    tp, fp, fn, _ = confusion(a, b)
    return iou(tp, fp, fn)


def logits_agreement(ref: np.ndarray, other: np.ndarray, threshold: float) -> dict:
    """Figures comparing two logit arrays (B, P, S, S): max/mean |delta logit| and mean mask IoU at `threshold`."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    logit_t = math.log(t / (1 - t))  # sigmoid(x) >= t  <=>  x >= logit(t)
    a, b = ref >= logit_t, other >= logit_t
    ious = [mask_iou(a[i, j], b[i, j]) for i in range(a.shape[0]) for j in range(a.shape[1])]
    delta = np.abs(ref.astype(np.float64) - other)
    return {"max_abs_logit_diff": float(delta.max()), "mean_abs_logit_diff": float(delta.mean()),
            "mask_iou": float(np.mean(ious)), "min_mask_iou": float(np.min(ious))}


# ---------------------------------------------------------------------------------------------------------
# The export


def export_onnx(model_source, out_dir, int8: bool = False, *, images: Sequence | None = None,
                prompts: Sequence[str] | None = None, threads: int | None = None,
                progress: Progress | None = None, source_name: str | None = None) -> dict:
    """Export `model_source` (any torch model source string) to `out_dir`; returns the manifest written.

    images: photos added to the parity sample (default: examples/); prompts: parity prompts (default: the
    model's own, from drywall_qa.json); source_name: what the manifest calls the source (default: the source
    as given and its folder; a public app passes the picker's label, so the manifest names no server path).
    Raises ExportError, writing nothing, when onnxruntime's fp32 logits
    differ from torch's by more than PARITY_TOL.
    """
    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    step(0.0, "loading the model")
    resolved = resolve_source(model_source)
    if resolved.kind == "onnx":
        raise ModelSourceError(f"{resolved.path} is already an ONNX export; pass the model folder it was made from.")
    seg = load_segmenter(resolved, threads=threads, precision="fp32")
    prompts = list(prompts) if prompts else model_prompts(seg.meta)
    out_dir = Path(out_dir)
    with replace_dir(out_dir) as tmp:
        step(0.05, "exporting the text encoder, vision encoder and decoder")
        fp32 = export_graphs(seg, tmp)
        graphs = {"fp32": fp32}
        if int8:
            step(0.5, "quantizing the encoders to int8")
            graphs["int8"] = {g: (graph_file(g, "int8") if g in INT8_OPS else fp32[g]) for g in GRAPHS}
            for g, ops in INT8_OPS.items():
                quantize_graph(tmp / fp32[g], tmp / graphs["int8"][g], ops)
        seg.tokenizer.save_pretrained(tmp)
        seg.processor.save_pretrained(tmp)
        manifest = _manifest(seg, model_source, resolved, graphs, tmp, source_name)
        _write_manifest(tmp, manifest)

        step(0.7, "checking parity in onnxruntime")
        pixel_values = sample_inputs(seg, images)
        torch_logits = seg.logits(torch.from_numpy(pixel_values), prompts).numpy()
        ort_fp32 = OnnxSegmenter(tmp, threads=seg.threads, int8=False).logits(pixel_values, prompts)
        parity = {"images": int(pixel_values.shape[0]), "prompts": prompts, "threshold": seg.threshold,
                  "tolerance": PARITY_TOL, "fp32_vs_torch": logits_agreement(torch_logits, ort_fp32, seg.threshold)}
        worst = parity["fp32_vs_torch"]["max_abs_logit_diff"]
        if not worst <= PARITY_TOL:
            raise ExportError(
                f"The ONNX graphs do not reproduce the torch model: max |delta logit| {worst:.2e} > {PARITY_TOL:g} "
                f"on {pixel_values.shape[0]} sample images; nothing was written to {out_dir}. This engine was checked "
                f"with torch 2.13, transformers 5.23 and onnxruntime 1.31 (here: {manifest['versions']}); "
                "install those."
            )
        if int8:
            step(0.85, "measuring int8 agreement with fp32")
            ort_int8 = OnnxSegmenter(tmp, threads=seg.threads, int8=True).logits(pixel_values, prompts)
            parity["int8_vs_fp32"] = logits_agreement(ort_fp32, ort_int8, seg.threshold)
            agrees = parity["int8_vs_fp32"]["mask_iou"] >= INT8_MIN_IOU
            manifest["default_precision"] = "int8" if agrees else "fp32"
        manifest["parity"] = parity
        _write_manifest(tmp, manifest)
    step(1.0, f"wrote {out_dir}")
    return manifest


def _manifest(seg, model_source, resolved, graphs: dict, folder: Path, source_name: str | None = None) -> dict:
    config = seg.model.config
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source_name or str(model_source),
        "source_path": source_name or (portable(resolved.path) if resolved.path else str(model_source)),
        "threshold": seg.threshold,
        "meta": seg.meta,
        "input_size": seg.input_size,
        "patch_size": config.vision_config.patch_size,
        "extract_layers": list(seg.extract_layers),
        "vision_layers_kept": max(seg.extract_layers) + 1,
        "vision_layers_total": config.vision_config.num_hidden_layers,
        "projection_dim": config.projection_dim,
        "max_text_tokens": config.text_config.max_position_embeddings,
        "opset": OPSET,
        "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "default_precision": "fp32",
        "graphs": graphs,
        "versions": {name: version(name) for name in ("torch", "transformers", "onnx", "onnxruntime")},
        "files": {name: sha256_file(folder / name) for name in files},
    }


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Agreement on real photos (int8 vs fp32; also used by the benchmark for bf16)


def mask_agreement(a, b, images: Sequence, prompts: Sequence[str], threshold: float | None = None) -> float:
    """Mean IoU between two segmenters' binary masks over every (photo, prompt) pair.

    a, b: segmenters (any backend); threshold: default a's own. Photos are paths or PIL images.
    """
    t = a.threshold if threshold is None else float(threshold)
    ious = []
    for image in images:
        ma, mb = a.predict(image, prompts), b.predict(image, prompts)
        ious += [mask_iou(ma[p] >= t, mb[p] >= t) for p in ma]
    return float(np.mean(ious))


def int8_agreement(model_source, images: Sequence, prompts: Sequence[str] | None = None,
                   threads: int | None = None) -> float:
    """Mean IoU of fp32 vs int8 ONNX masks over real photos, at the model's threshold.

    model_source: an export made with --int8, or any torch model source (exported to a temporary folder
    first). prompts: default the model's own.
    """
    resolved = resolve_source(model_source)
    with tempfile.TemporaryDirectory(prefix="int8-agreement-") as tmp:
        folder = resolved.path
        if resolved.kind != "onnx" or "int8" not in read_manifest(folder).get("graphs", {}):
            if resolved.kind == "onnx":
                raise ModelSourceError(f"{folder} has no int8 graphs; re-export it with --int8.")
            folder = Path(tmp) / "export"
            export_onnx(str(resolved.path), folder, int8=True, threads=threads)
        fp32 = OnnxSegmenter(folder, threads=threads, int8=False)
        q8 = OnnxSegmenter(folder, threads=threads, int8=True)
        return mask_agreement(fp32, q8, images, prompts or model_prompts(fp32.meta))


# ---------------------------------------------------------------------------------------------------------
# Reports (the CLI prints them; the app shows the rows as a table)

_NAN = float("nan")


def report_rows(manifest: dict, out_dir) -> list[tuple[str, str]]:
    """The figures of an export manifest worth reading, as (measure, value) text rows.

    Source, input size, vision layers kept, parity sample, onnx fp32 vs torch (max |delta logit| with its limit,
    mask IoU), onnx int8 vs fp32 when exported with --int8 (mask IoU mean and min, max and mean |delta logit|),
    the default precision, then one "<graph file> (MB)" row per graph present in out_dir. Missing figures show
    as "nan" or "?" rather than failing.
    """
    parity = manifest.get("parity") or {}
    f32 = parity.get("fp32_vs_torch") or {}
    rows = [
        ("source", str(manifest.get("source", "?"))),
        ("input size (px)", str(manifest.get("input_size", "?"))),
        ("vision layers kept", f"{manifest.get('vision_layers_kept', '?')}/{manifest.get('vision_layers_total', '?')}"),
        ("parity sample", f"{parity.get('images', '?')} images x {len(parity.get('prompts') or [])} prompts"),
        ("onnx fp32 vs torch: max |dlogit|", f"{f32.get('max_abs_logit_diff', _NAN):.2e} "
                                             f"(limit {parity.get('tolerance', _NAN):g})"),
        ("onnx fp32 vs torch: mask IoU", f"{f32.get('mask_iou', _NAN):.4f}"),
    ]
    q = parity.get("int8_vs_fp32")
    if q:
        rows += [("onnx int8 vs fp32: mask IoU (mean)", f"{q.get('mask_iou', _NAN):.4f}"),
                 ("onnx int8 vs fp32: mask IoU (min)", f"{q.get('min_mask_iou', _NAN):.4f}"),
                 ("onnx int8 vs fp32: max |dlogit|", f"{q.get('max_abs_logit_diff', _NAN):.3f}"),
                 ("onnx int8 vs fp32: mean |dlogit|", f"{q.get('mean_abs_logit_diff', _NAN):.4f}")]
    rows.append(("default precision", str(manifest.get("default_precision", "fp32"))))
    for name in manifest.get("files", {}):
        path = Path(out_dir) / name
        if name.endswith(".onnx") and path.is_file():
            rows.append((f"{name} (MB)", f"{path.stat().st_size / 2**20:.1f}"))
    return rows


def format_report(manifest: dict, out_dir) -> str:
    """The parity report `python -m engine export` prints: a headline, then `report_rows` as "measure: value"."""
    rows = report_rows(manifest, out_dir)
    values = dict(rows)
    lines = [
        f"exported {values['source']} -> {out_dir} (opset {manifest.get('opset', '?')}, input "
        f"{values['input size (px)']} px, vision layers {values['vision layers kept']})",
        f"parity on {values['parity sample']}:",
        *(f"  {measure}: {value}" for measure, value in rows if measure.startswith("onnx ")),
    ]
    if "int8_vs_fp32" in (manifest.get("parity") or {}) and values["default precision"] != "int8":
        lines.append(f"  warning: int8 masks agree with fp32 below {INT8_MIN_IOU} IoU on this sample; "
                     "the export loads fp32 by default (load_segmenter(..., precision='int8') forces int8)")
    graphs = [(measure.removesuffix(" (MB)"), value) for measure, value in rows if measure.endswith(" (MB)")]
    lines.append("  graphs: " + ", ".join(f"{name} {mb} MB" for name, mb in graphs))
    lines.append(f"  default precision: {values['default precision']}")
    return "\n".join(lines)
