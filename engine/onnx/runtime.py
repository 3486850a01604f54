"""Run an ONNX export (`python -m engine export`) with onnxruntime, behind the same facade as the torch `Segmenter`.

An export folder holds three graphs per precision, the tokenizer and preprocessor files, and `manifest.json`:

    text_encoder.onnx     input_ids, attention_mask (P, T) int64 -> conditional (P, D) float32
    vision_encoder.onnx   pixel_values (B, 3, S, S) float32 -> act_0 .. act_{n-1}, each (B, 1 + (S/16)^2, hidden):
                          the outputs of the extract layers; the layers past the deepest are not in the graph
    decoder.onnx          act_0 .. act_{n-1} (N, ...) + conditional (N, D) -> logits (N, S, S), one row per pair;
                          activations of batch 1 broadcast over the N rows (one photo, N prompts)
    *.int8.onnx           the same graphs with dynamically quantized (int8) weights, when exported with --int8

As in the torch `Segmenter`, the vision graph runs once per photo, text embeddings are cached per prompt, and
only the small decoder runs per (photo, prompt). `manifest["graphs"]` maps each precision to its three files
(an int8 set may reuse the fp32 decoder); `manifest["default_precision"]` says which set a plain load uses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from engine.errors import ModelSourceError
from engine.paths import MANIFEST_FILE
from engine.segmenter import SegmenterBase, default_threads, preprocess_images

FORMAT = "drywall-qa-onnx"
FORMAT_VERSION = 1
GRAPHS = ("text_encoder", "vision_encoder", "decoder")
PRECISIONS = ("fp32", "int8")


def graph_file(graph: str, precision: str) -> str:
    """File name of one graph: `vision_encoder.onnx` (fp32) or `vision_encoder.int8.onnx`."""
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _reexport_hint(folder: Path, manifest: dict | None = None) -> str:
    source = (manifest or {}).get("source") or "MODEL"
    int8 = " --int8" if manifest and "int8" in manifest.get("graphs", {}) else ""
    return f"Re-export it: python -m engine export --model {source} --out {folder}{int8}"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of an export folder, checked for format and version (ModelSourceError otherwise)."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ModelSourceError(f"{folder} is not an ONNX export: {MANIFEST_FILE} is missing. {_reexport_hint(folder)}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{path} is not valid JSON ({exc}). {_reexport_hint(folder)}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelSourceError(f"{path} is not a Drywall QA export manifest. {_reexport_hint(folder)}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelSourceError(
            f"{folder} is an export of format version {version}; this version of the engine reads version "
            f"{FORMAT_VERSION}. {_reexport_hint(folder, manifest)}"
        )
    return manifest


def choose_precision(folder: Path, manifest: dict, int8: bool | None) -> str:
    """"int8" or "fp32": what `int8` asks for, else the manifest's default (int8 when exported with --int8)."""
    if int8 is None:
        return manifest.get("default_precision", "fp32")
    if int8 and "int8" not in manifest.get("graphs", {}):
        raise ModelSourceError(
            f"The ONNX export {folder} has no int8 graphs. Re-export it with --int8: python -m engine export "
            f"--model {manifest.get('source') or 'MODEL'} --out {folder} --int8"
        )
    return "int8" if int8 else "fp32"


def verify_files(folder: Path, manifest: dict, names: Sequence[str]) -> None:
    """Check that `names` exist and match the manifest's sha256 (ModelSourceError naming the first bad file)."""
    hashes = manifest.get("files", {})
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ModelSourceError(
                f"The ONNX export {folder} is incomplete: {name} is missing. {_reexport_hint(folder, manifest)}"
            )
        expected = hashes.get(name)
        if expected is None:
            raise ModelSourceError(
                f"{folder}/{MANIFEST_FILE} lists no checksum for {name}. {_reexport_hint(folder, manifest)}"
            )
        if sha256_file(path) != expected:
            raise ModelSourceError(
                f"The ONNX export {folder} is corrupt: {name} does not match its sha256 in {MANIFEST_FILE} "
                f"(changed or truncated since export). {_reexport_hint(folder, manifest)}"
            )


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(threads: int):
    """Explicit threading (intra-op = threads, no inter-op pool) and every graph optimization on."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting: three sessions (and torch's upsampling) take turns, and on a shared 2-core machine
    # spinning pools made a photo 30-70% slower (measured).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class OnnxSegmenter(SegmenterBase):
    """An export folder run by onnxruntime. Same interface as `engine.segmenter.Segmenter`.

    folder: the export (manifest.json + graphs + tokenizer + preprocessor_config.json).
    int8: True for the int8 graphs, False for fp32, None for the manifest's default.
    threads: onnxruntime intra-op threads (default: all cores). providers: onnxruntime execution providers
    (default: CUDA when available, else CPU).
    Raises ModelSourceError for an incomplete, corrupt or other-version export, with the command to re-export.
    """

    def __init__(self, folder, *, threads: int | None = None, int8: bool | None = None, providers=None):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        self.manifest = manifest
        self.precision = choose_precision(self.folder, manifest, int8)
        self.backend = f"onnx-{self.precision}"
        files = manifest.get("graphs", {}).get(self.precision, {})
        missing = [g for g in GRAPHS if g not in files]
        if missing:
            raise ModelSourceError(
                f"{self.folder}/{MANIFEST_FILE} lists no {self.precision} {', '.join(missing)} graph. "
                f"{_reexport_hint(self.folder, manifest)}"
            )
        # The chosen graphs and the tokenizer/preprocessor files; the other precision's graphs are not read.
        others = [n for n in manifest.get("files", {}) if not n.endswith(".onnx")]
        verify_files(self.folder, manifest, [*(files[g] for g in GRAPHS), *others])

        self.threads = threads or default_threads()
        opts = session_options(self.threads)
        self.providers = list(providers or default_providers())
        self.sessions = {}
        for graph in GRAPHS:
            path = self.folder / files[graph]
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
                raise ModelSourceError(
                    f"onnxruntime cannot load {path} ({type(exc).__name__}: {str(exc)[:300]}). "
                    f"{_reexport_hint(self.folder, manifest)}"
                ) from exc
        self.tokenizer, processor = _load_preprocessing(self.folder, manifest)
        self.input_size = int(manifest["input_size"])
        self.mean = list(processor.image_mean)
        self.std = list(processor.image_std)
        self.resample = int(getattr(processor, "resample", 2))
        self.threshold = float(manifest.get("threshold", 0.4))
        self.name = f"{self.folder.name} ({self.backend})"
        self.meta = dict(manifest.get("meta", {}))
        self.extract_layers = list(manifest["extract_layers"])
        # The text encoder's token limit, when the export recorded it (older exports: no check; onnxruntime
        # then fails on a too-long prompt with its own message).
        self.max_text_tokens = manifest.get("max_text_tokens")
        self._activation_names = [o.name for o in self.sessions["vision_encoder"].get_outputs()]
        self._decoder_inputs = [i.name for i in self.sessions["decoder"].get_inputs()]
        self._text_cache: dict[str, np.ndarray] = {}

    # -- the three steps, as in `Segmenter` --------------------------------------------------------------

    def preprocess(self, images) -> np.ndarray:
        """PIL RGB images -> pixel_values (B, 3, S, S) float32 (the torch Segmenter's own preprocessing)."""
        return preprocess_images(images, self.input_size, self.mean, self.std, self.resample)

    def vision_activations(self, pixel_values: np.ndarray) -> list[np.ndarray]:
        """(B, 3, S, S) -> one (B, 1 + (S/patch)^2, hidden) float32 array per extract layer."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        return self.sessions["vision_encoder"].run(self._activation_names, {"pixel_values": pixel_values})

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """(P, D) float32 conditional embeddings, computed once per distinct prompt and cached."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing, padding=True, return_tensors="np")
            (emb,) = self.sessions["text_encoder"].run(None, {
                "input_ids": tokens["input_ids"].astype(np.int64),
                "attention_mask": tokens["attention_mask"].astype(np.int64),
            })
            self._text_cache.update(zip(missing, emb))
        return np.stack([self._text_cache[p] for p in prompts])

    def decode(self, activations: list[np.ndarray], conditional: np.ndarray) -> np.ndarray:
        """Decoder for every (photo, prompt) pair: (B, ...) activations x (P, D) -> logits (B, P, S, S).

        One run per photo, its activations (batch 1) broadcast over the P prompts inside the graph.
        """
        conditional = np.ascontiguousarray(conditional, dtype=np.float32)
        out = []
        for i in range(activations[0].shape[0]):
            feeds = {name: a[i : i + 1] for name, a in zip(self._decoder_inputs, activations)}
            feeds[self._decoder_inputs[-1]] = conditional
            out.append(self.sessions["decoder"].run(None, feeds)[0])
        return np.stack(out)

    def logits(self, pixel_values, prompts: Sequence[str]) -> np.ndarray:
        """pixel_values (B, 3, S, S) -> logits (B, P, S, S) float32, before sigmoid."""
        return self.decode(self.vision_activations(np.asarray(pixel_values)), self.text_embeddings(list(prompts)))


def _load_preprocessing(folder: Path, manifest: dict):
    """(tokenizer, image processor) from the export folder's copies."""
    try:
        return AutoTokenizer.from_pretrained(folder), ViTImageProcessorPil.from_pretrained(folder)
    except Exception as exc:
        raise ModelSourceError(
            f"The ONNX export {folder} lacks a usable tokenizer or preprocessor_config.json "
            f"({type(exc).__name__}: {exc}). {_reexport_hint(folder, manifest)}"
        ) from exc
