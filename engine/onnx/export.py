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

import copy
import datetime
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.models import REPO_ROOT, ModelSourceError, load_segmenter, resolve_source
from engine.errors import ExportError
from engine.onnx.runtime import (
    FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST_FILE, OnnxSegmenter, graph_file, read_manifest, sha256_file,
)

OPSET = 17  # LayerNormalization is a single op from 17 on
PARITY_TOL = 1e-3  # max |delta logit| allowed between onnxruntime fp32 and torch fp32
INT8_MIN_IOU = 0.95  # int8 becomes the export's default precision only if its masks agree this well with fp32
# What --int8 quantizes, per graph: the text encoder's token table too (Gather: 49408 x 512 floats in CLIP, half
# the file); the decoder is small (~1.5% of the vision work per prompt) and stays fp32.
INT8_OPS = {"text_encoder": ("MatMul", "Gemm", "Gather"), "vision_encoder": ("MatMul", "Gemm")}
SAMPLE_PHOTOS = REPO_ROOT / "examples"  # photos added to the parity sample when present
DEFAULT_PROMPTS = ("segment crack", "segment taping area", "segment joint/tape")

Progress = Callable[[float, str], None]  # progress(fraction done in [0, 1], what is being done)


# ---------------------------------------------------------------------------------------------------------
# The three graphs as modules (the HF submodules, re-used; nothing copied but the position table)


def _torch_modules():
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        """input_ids, attention_mask (P, T) int64 -> conditional embedding (P, projection_dim)."""

        def __init__(self, clip):
            super().__init__()
            self.text_model = clip.text_model
            self.text_projection = clip.text_projection

        def forward(self, input_ids, attention_mask):
            pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            return self.text_projection(pooled)

    class VisionEncoder(nn.Module):
        """pixel_values (B, 3, S, S) -> one (B, 1 + (S/patch)^2, hidden) activation per extract layer.

        Holds only the encoder layers up to the deepest extract layer, so the later ones are neither run nor
        stored. The position table is interpolated to S once here (HF does it on every forward).
        """

        def __init__(self, vision_model, extract_layers: Sequence[int], input_size: int):
            super().__init__()
            emb = vision_model.embeddings
            self.patch_embedding = emb.patch_embedding
            self.class_embedding = emb.class_embedding
            n_tokens = 1 + (input_size // emb.patch_size) ** 2
            with torch.no_grad():
                dummy = torch.zeros(1, n_tokens, emb.embed_dim)
                self.register_buffer("position_embedding", emb.interpolate_pos_encoding(dummy, input_size, input_size))
            self.pre_layrnorm = vision_model.pre_layrnorm
            self.extract_layers = list(extract_layers)
            self.layers = nn.ModuleList(vision_model.encoder.layers[: max(self.extract_layers) + 1])

        def forward(self, pixel_values):
            patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, hidden)
            cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
            hidden = self.pre_layrnorm(torch.cat([cls, patches], dim=1) + self.position_embedding)
            outputs = {}
            for i, layer in enumerate(self.layers):
                hidden = layer(hidden, None)
                if i in self.extract_layers:
                    outputs[i] = hidden
            return tuple(outputs[i] for i in self.extract_layers)

    class Decoder(nn.Module):
        """act_0 .. act_{n-1} (N or 1, T, hidden) + conditional (N, D) -> logits (N, S, S), one row per pair.

        Activations of batch 1 broadcast over the N prompts (HF's decoder broadcasts in FiLM and the residual
        adds), so one photo's activations are neither copied N times nor reduced N times.
        """

        def __init__(self, decoder):
            super().__init__()
            self.decoder = decoder

        def forward(self, *inputs):
            return self.decoder(list(inputs[:-1]), inputs[-1]).logits

    return TextEncoder, VisionEncoder, Decoder


def _eager_copy(model):
    """A copy of the model with eager attention everywhere (plain MatMul/Softmax export cleanly)."""
    model = copy.deepcopy(model).float().eval()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
    return model


def export_graphs(seg, out_dir: Path, opset: int = OPSET) -> dict[str, str]:
    """Write the three fp32 graphs of a torch `Segmenter` into out_dir; returns {graph: file name}.

    The TorchScript exporter (dynamo=False) on an eager-attention copy: parity ~2e-7 on the full-size
    architecture, ~20 s for its three graphs on 2 cores. Batch and text length are dynamic axes; the input size
    is fixed (the vision graph holds its position table).
    """
    import torch

    TextEncoder, VisionEncoder, Decoder = _torch_modules()
    model = _eager_copy(seg.model)
    n = len(seg.extract_layers)
    s = seg.input_size
    tokens = seg.tokenizer(["segment crack", "a"], padding=True, return_tensors="pt")  # padding exercised
    vision = VisionEncoder(model.clip.vision_model, seg.extract_layers, s).eval()
    pixel_values = torch.randn(2, 3, s, s)
    with torch.no_grad():
        acts = vision(pixel_values)
    act_names = [f"act_{i}" for i in range(n)]
    cond = torch.randn(3, model.config.projection_dim)
    jobs = {
        "text_encoder": (TextEncoder(model.clip), (tokens["input_ids"], tokens["attention_mask"]),
                         ["input_ids", "attention_mask"], ["conditional"],
                         {"input_ids": {0: "prompts", 1: "tokens"}, "attention_mask": {0: "prompts", 1: "tokens"},
                          "conditional": {0: "prompts"}}),
        "vision_encoder": (vision, (pixel_values,), ["pixel_values"], act_names,
                           {name: {0: "batch"} for name in ["pixel_values", *act_names]}),
        # Traced in the broadcast case (1 photo, 3 prompts); a batch of N pairs runs through the same ops.
        "decoder": (Decoder(model.decoder).eval(), (*(a[:1] for a in acts), cond), [*act_names, "conditional"],
                    ["logits"], {**{name: {0: "photos"} for name in act_names}, "conditional": {0: "pairs"},
                                 "logits": {0: "pairs"}}),
    }
    files = {}
    for graph, (module, args, inputs, outputs, axes) in jobs.items():
        files[graph] = graph_file(graph, "fp32")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shape constants: the input size is fixed
            torch.onnx.export(module.eval(), args, str(out_dir / files[graph]), input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    return files


def quantize_graph(src: Path, dst: Path, op_types: Sequence[str] = ("MatMul", "Gemm")) -> None:
    """Dynamic int8 quantization of a graph's weights (onnxruntime.quantization.quantize_dynamic).

    Weights QInt8 (per tensor) and activations QUInt8: the u8 x s8 VNNI kernels, 2.5x faster than fp32 here,
    where QUInt8 weights ran 1.5x slower than QInt8, per-channel weights ~8% slower for ~15% less error, and
    `quant_pre_process` or onnxruntime's transformer fusions gave nothing or less. Only matmuls with a constant
    weight are quantized (MatMulConstBOnly): attention's activation x activation products stay fp32, and so
    does the patch-embedding Conv (quantizing it doubled the activation error for no speed).
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on the root logger at every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------------------------------------------------
# Parity


def sample_inputs(seg, images: Sequence | None = None, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """pixel_values (B, 3, S, S) for the parity check: `n_random` random-pixel photos plus `images`.

    images: paths or PIL images; None means the photos in examples/ (when the folder is there).
    """
    from PIL import Image

    from engine.images import list_images, load_image

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
    from engine.metrics import confusion, iou

    tp, fp, fn, _ = confusion(a, b)
    return iou(tp, fp, fn)


def logits_agreement(ref: np.ndarray, other: np.ndarray, threshold: float) -> dict:
    """Figures comparing two logit arrays (B, P, S, S): max/mean |delta logit| and mean mask IoU at `threshold`."""
    import math

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
                progress: Progress | None = None) -> dict:
    """Export `model_source` (any torch model source string) to `out_dir`; returns the manifest written.

    images: photos added to the parity sample (default: examples/); prompts: parity prompts (default: the
    model's own, from drywall_qa.json). Raises ExportError, writing nothing, when onnxruntime's fp32 logits
    differ from torch's by more than PARITY_TOL.
    """
    import torch

    from engine.fileio import replace_dir

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
        manifest = _manifest(seg, model_source, resolved, graphs, tmp)
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
                f"with torch 2.13, transformers 5.23 and onnxruntime 1.31 (here: {manifest['versions']}); install those."
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


def _manifest(seg, model_source, resolved, graphs: dict, folder: Path) -> dict:
    from importlib.metadata import version

    config = seg.model.config
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": str(model_source),
        "source_path": str(resolved.path),
        "threshold": seg.threshold,
        "meta": seg.meta,
        "input_size": seg.input_size,
        "patch_size": config.vision_config.patch_size,
        "extract_layers": list(seg.extract_layers),
        "vision_layers_kept": max(seg.extract_layers) + 1,
        "vision_layers_total": config.vision_config.num_hidden_layers,
        "projection_dim": config.projection_dim,
        "opset": OPSET,
        "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "default_precision": "fp32",
        "graphs": graphs,
        "versions": {name: version(name) for name in ("torch", "transformers", "onnx", "onnxruntime")},
        "files": {name: sha256_file(folder / name) for name in files},
    }


def _write_manifest(folder: Path, manifest: dict) -> None:
    import json

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
    import tempfile

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
# Command line


def format_report(manifest: dict, out_dir) -> str:
    """The parity report `python -m engine export` prints."""
    parity = manifest["parity"]
    f32 = parity["fp32_vs_torch"]
    lines = [
        f"exported {manifest['source']} -> {out_dir} (opset {manifest['opset']}, input {manifest['input_size']} px, "
        f"vision layers {manifest['vision_layers_kept']}/{manifest['vision_layers_total']})",
        f"parity on {parity['images']} images x {len(parity['prompts'])} prompts:",
        f"  onnx fp32 vs torch: max |dlogit| {f32['max_abs_logit_diff']:.2e} (limit {parity['tolerance']:g}), "
        f"mask IoU {f32['mask_iou']:.4f}",
    ]
    if "int8_vs_fp32" in parity:
        q = parity["int8_vs_fp32"]
        lines.append(f"  onnx int8 vs fp32: mask IoU {q['mask_iou']:.4f} (min {q['min_mask_iou']:.4f}), "
                     f"max |dlogit| {q['max_abs_logit_diff']:.3f}, mean {q['mean_abs_logit_diff']:.4f}")
        if manifest["default_precision"] != "int8":
            lines.append(f"  warning: int8 masks agree with fp32 below {INT8_MIN_IOU} IoU on this sample; "
                         "the export loads fp32 by default (load_segmenter(..., precision='int8') forces int8)")
    graphs = [name for name in manifest["files"] if name.endswith(".onnx")]
    sizes = {name: (Path(out_dir) / name).stat().st_size / 2**20 for name in graphs}
    lines.append("  graphs: " + ", ".join(f"{n} {mb:.1f} MB" for n, mb in sizes.items()))
    lines.append(f"  default precision: {manifest['default_precision']}")
    return "\n".join(lines)


def cli_export(args) -> int:
    """`python -m engine export --model MODEL --out export/NAME [--int8]`."""
    from tqdm import tqdm

    with tqdm(total=100, desc="export", unit="%", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(int(fraction * 100) - bar.n)

        manifest = export_onnx(args.model, args.out, int8=args.int8, progress=progress)
    print(format_report(manifest, args.out))
    return 0
