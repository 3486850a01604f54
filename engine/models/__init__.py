"""Model sources: a Hub id, a local Hugging Face folder, a training run, an ONNX export, or `auto`.

`load_segmenter(source)` is the one way in. Everything that takes a model (the CLI, the app, evaluation,
export) passes the user's string here, so the same strings work everywhere:

    auto                         the Hub model if cached or reachable, else the bundled offline model
    CIDAS/clipseg-rd64-refined   a Hub id (through huggingface_hub's cache)
    path/to/folder               a Hugging Face folder (config.json, *.safetensors, tokenizer, preprocessor)
    checkpoints/my-run           a training run folder (its best/ model)
    export/my-export             an ONNX export folder (manifest.json + *.onnx), run by onnxruntime

A model folder may hold `drywall_qa.json` (written by training): its calibrated threshold and prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from engine.errors import ModelSourceError
from engine.paths import META_FILE, REPO_ROOT, STARTER_DIR

DEFAULT_HUB_ID = "CIDAS/clipseg-rd64-refined"
DEFAULT_THRESHOLD = 0.4
HUB_TIMEOUT_S = 4.0
# What a model folder must hold; the tokenizer comes as tokenizer.json or as vocab.json + merges.txt.
HUB_FILES = ["config.json", "*.safetensors", "*.json", "*.txt"]
# What `load_segmenter` runs torch models in unless told otherwise: "auto" = bf16 matmuls where the CPU has
# native bf16 (AVX-512 BF16 / AMX; ~2.7x faster than fp32 here), else fp32. Chosen because bf16 masks agree
# with fp32: mean IoU 0.996 on the bundled model (epoch 59) over the 165 valid photos (rule: >= 0.97). Pass
# precision="fp32" for bit-for-bit reference numbers.
DEFAULT_TORCH_PRECISION = "auto"
PRECISIONS = (None, "auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class Source:
    """A resolved model source: `kind` is hub, folder, run or onnx; `path` the local folder to load."""

    kind: str
    path: Path
    label: str


# ---------------------------------------------------------------------------------------------------------
# Configs and fresh models (tests, benchmarks and from-scratch training build models here, offline)


def full_size_config():
    """The CIDAS/clipseg-rd64-refined architecture (ViT-B/16 vision, 12 layers; reduce_dim 64; complex deconv)."""
    from transformers import CLIPSegConfig

    return CLIPSegConfig(use_complex_transposed_convolution=True, vision_config={"patch_size": 16})


def tiny_config(vocab_size: int = 1024, image_size: int = 64, **overrides):
    """A CLIPSeg small enough for unit tests (hidden 32, vision 4 layers of which the decoder reads 0-2).

    Layer 3 of the vision tower is deliberately past the deepest extract layer, so tests see it skipped.
    """
    from transformers import CLIPSegConfig

    kwargs = dict(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=32,
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
        ),
        vision_config=dict(
            image_size=image_size, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4,
        ),
        projection_dim=32, reduce_dim=16, extract_layers=[0, 1, 2], decoder_num_attention_heads=2,
        decoder_intermediate_size=32, use_complex_transposed_convolution=True,
    )
    kwargs.update(overrides)
    return CLIPSegConfig(**kwargs)


def fit_config_to_tokenizer(config, tokenizer):
    """Point the text config at the tokenizer's ids: CLIPSeg pools the text at the first `eos_token_id`."""
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    return config


def reinit_decoder(model, foreground_prior: float = 0.05, film_std: float = 1e-3) -> None:
    """Give the decoder trainable starting weights for training from scratch.

    A fresh `CLIPSegConfig` initialises the FiLM, reduce and transposed-convolution layers with N(0, 1)
    weights (logits with std ~500), which collapses training to all-background. Here: PyTorch's default
    init, FiLM as the identity (multiply by 1, add 0) plus noise of `film_std` (larger values let different
    prompts steer the decoder apart from the first step), and a last-layer bias at the logit of
    `foreground_prior` so the initial loss matches the mostly-background masks.
    """
    import math

    import torch
    from torch import nn

    decoder = model.decoder
    for module in decoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    with torch.no_grad():
        for film, bias in ((decoder.film_mul, 1.0), (decoder.film_add, 0.0)):
            nn.init.normal_(film.weight, std=film_std)
            nn.init.constant_(film.bias, bias)
        last = decoder.transposed_convolution
        last = last[-1] if isinstance(last, nn.Sequential) else last
        last.bias.fill_(math.log(foreground_prior / (1 - foreground_prior)))


def new_model(config, seed: int = 0):
    """A randomly initialised `CLIPSegForImageSegmentation` with a trainable decoder (see `reinit_decoder`)."""
    import torch
    from transformers import CLIPSegForImageSegmentation

    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config)
    reinit_decoder(model)
    return model.eval()


def image_processor(size: int = 352):
    """CLIPSeg's preprocessing: resize to size x size (bilinear), scale to [0, 1], ImageNet mean/std."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return ViTImageProcessorPil(
        do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


def save_model_folder(model, tokenizer, out_dir, *, image_size: int, meta: dict | None = None,
                      extra: Callable[[Path], None] | None = None) -> Path:
    """Write a Hugging Face folder: config, safetensors weights, tokenizer, preprocessor and `drywall_qa.json`.

    extra(tmp) may write more files into the folder before it is swapped in (training's optimizer state).
    Files are written into a temporary sibling folder and swapped in with renames, so a crash mid-write
    leaves the previous folder intact. Training's best/ and last/ and every other model folder go through here.
    """
    from engine.fileio import replace_dir

    out_dir = Path(out_dir)
    with replace_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        image_processor(image_size).save_pretrained(tmp)
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if extra is not None:
            extra(tmp)
    return out_dir


def make_random_model_folder(out_dir, config=None, *, seed: int = 0, meta: dict | None = None) -> Path:
    """A loadable model folder with random weights and a locally built tokenizer (tests, benchmarks)."""
    from engine.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    config = fit_config_to_tokenizer(config or tiny_config(), tokenizer)
    model = new_model(config, seed=seed)
    size = processor_size_for(config)
    return save_model_folder(model, tokenizer, out_dir, image_size=size, meta=meta)


def processor_size_for(config) -> int:
    """Input size for a config: 352 for the CLIP ViT-B/16 shape (CLIPSeg's recipe), else the vision image size."""
    size = config.vision_config.image_size
    return 352 if size == 224 else size


# ---------------------------------------------------------------------------------------------------------
# Resolving a source string


def _is_onnx_export(path: Path) -> bool:
    # The manifest alone decides: an export with a graph missing then fails in OnnxSegmenter, saying which.
    return (path / "manifest.json").is_file()


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_source(source: str | os.PathLike = "auto") -> Source:
    """Turn the user's model string into a local folder to load (downloading from the Hub if needed)."""
    text = str(source).strip()
    if text in ("", "auto"):
        return _resolve_auto()
    if text in ("starter", "bundled"):
        return _resolve_local(STARTER_DIR)
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if path.exists():
        return _resolve_local(path)
    if _looks_like_hub_id(text):
        return Source("hub", hub_snapshot(text), text)
    raise ModelSourceError(
        f"Model source {text!r} is neither an existing folder nor a Hub id. Pass a folder in Hugging Face "
        f"format, a run under checkpoints/, an export under export/, a Hub id like {DEFAULT_HUB_ID!r}, or 'auto'."
    )


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _resolve_local(path: Path) -> Source:
    path = path.resolve()
    if not path.is_dir():
        raise ModelSourceError(f"Model source {path} is a file; pass the folder that holds config.json.")
    if _is_onnx_export(path):
        return Source("onnx", path, path.name)
    for sub in ("best", "last"):  # a run folder (its config.json is the TrainConfig, not a model config)
        if _is_model_folder(path / sub):
            return Source("run", path / sub, f"{path.name}/{sub}")
    if _is_model_folder(path):
        return Source("folder", path, path.name)
    if path == STARTER_DIR.resolve():
        raise ModelSourceError(
            f"The bundled offline model is missing from {path}. Re-clone the repository, or rebuild it with "
            "`python -m engine train --preset starter`."
        )
    raise ModelSourceError(
        f"{path} holds no model: expected config.json + *.safetensors (a Hugging Face folder), a training run "
        "with best/ or last/, or an ONNX export with manifest.json."
    )


def _resolve_auto() -> Source:
    try:
        return Source("hub", hub_snapshot(DEFAULT_HUB_ID), DEFAULT_HUB_ID)
    except ModelSourceError:
        return _resolve_local(STARTER_DIR)


def hub_snapshot(repo_id: str, timeout_s: float = HUB_TIMEOUT_S) -> Path:
    """The local folder of a Hub model: from the cache if present, else downloaded (failing fast offline)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # not cached (or cache incomplete): try the network below
        pass
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelSourceError(_offline_message(repo_id, "HF_HUB_OFFLINE is set and the model is not in the cache"))
    if not _hub_reachable(timeout_s):
        raise ModelSourceError(_offline_message(repo_id, "the Hugging Face Hub is unreachable"))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, etag_timeout=timeout_s))
    except Exception as exc:
        raise ModelSourceError(_offline_message(repo_id, f"download failed ({type(exc).__name__}: {exc})")) from exc


def _hub_reachable(timeout_s: float) -> bool:
    """One quick HTTPS handshake with the Hub's host: no retry loop, so offline fails in seconds."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _offline_message(repo_id: str, why: str) -> str:
    return (
        f"Cannot load {repo_id!r} from the Hugging Face Hub: {why}. Alternatives: pass a local model folder "
        f"(--model path/to/folder), use the bundled offline model (--model {STARTER_DIR.relative_to(REPO_ROOT)}), "
        "or download the model once with internet access and then set HF_HUB_OFFLINE=1 to use the filled cache."
    )


# ---------------------------------------------------------------------------------------------------------
# Loading


def read_meta(folder: Path) -> dict:
    """`drywall_qa.json` of a model folder (threshold, prompts, training summary), or {}."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelSourceError(f"{path} is not valid JSON ({exc}); delete it or restore it from the run.") from exc


def load_clipseg(folder: Path):
    """Load (model, tokenizer, image processor) from a folder, refusing missing or mismatched weights.

    `from_pretrained` would otherwise fill absent weights with random values and only log a warning: a
    model with a random decoder that segments noise.
    """
    from transformers import AutoTokenizer, CLIPSegForImageSegmentation
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    folder = Path(folder)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelSourceError(f"{folder} has config.json but no weights (*.safetensors); the download or save is incomplete.")
    try:
        model, info = CLIPSegForImageSegmentation.from_pretrained(folder, output_loading_info=True, dtype="float32")
    except Exception as exc:
        raise ModelSourceError(f"Cannot load the weights in {folder}: {type(exc).__name__}: {exc}") from exc
    missing = sorted(k for k in info.get("missing_keys", []) if not k.endswith("position_ids"))
    mismatched = sorted(info.get("mismatched_keys", []), key=str)
    if missing or mismatched:
        names = ", ".join([*missing[:5], *(str(m[0] if isinstance(m, tuple) else m) for m in mismatched[:5])])
        raise ModelSourceError(
            f"The weights in {folder} do not match its config.json ({len(missing)} missing, {len(mismatched)} "
            f"mismatched, e.g. {names}). The folder is incomplete or from another architecture; re-download or "
            "re-export it."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        processor = ViTImageProcessorPil.from_pretrained(folder)
    except Exception as exc:
        raise ModelSourceError(
            f"{folder} lacks a usable tokenizer or preprocessor_config.json ({type(exc).__name__}: {exc})."
        ) from exc
    return model.eval(), tokenizer, processor


def load_segmenter(source: str | os.PathLike = "auto", *, threads: int | None = None, precision: str | None = None,
                   device: str = "cpu"):
    """A ready segmenter (`engine.segmenter.Segmenter`, or `engine.onnx.runtime.OnnxSegmenter` for exports).

    precision: None for the source's default: `DEFAULT_TORCH_PRECISION` for torch models; for an ONNX export
    the precision it was exported with (int8 when made with --int8 and its masks agreed with fp32, see its
    manifest.json). Or name one: "fp32"; "bf16" (torch only); "int8" (exports made with --int8); "auto"
    (torch: bf16 where the CPU has native bf16 instructions, else fp32; exports: their default).
    """
    resolved = source if isinstance(source, Source) else resolve_source(source)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(str, PRECISIONS))}, not {precision!r}.")
    if resolved.kind == "onnx":
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
    from engine.segmenter import Segmenter

    model, tokenizer, processor = load_clipseg(resolved.path)
    meta = read_meta(resolved.path)
    return Segmenter(
        model, tokenizer, processor, threshold=float(meta.get("threshold", DEFAULT_THRESHOLD)),
        name=resolved.label, threads=threads, precision=precision, device=device, meta=meta,
    )


def list_models(checkpoints_dir=None, export_dir=None) -> list[tuple[str, str]]:
    """Model choices for pickers: (label, source) for auto, the bundled model, each run and each export."""
    checkpoints_dir = Path(checkpoints_dir or REPO_ROOT / "checkpoints")
    export_dir = Path(export_dir or REPO_ROOT / "export")
    choices = [(f"auto ({DEFAULT_HUB_ID}, else the bundled model)", "auto")]
    if _is_model_folder(STARTER_DIR) or (STARTER_DIR / "best").is_dir():
        choices.append(("bundled offline model (drywall-starter)", str(STARTER_DIR)))
    for folder, kind in ((checkpoints_dir, "run"), (export_dir, "onnx")):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if path.resolve() == STARTER_DIR.resolve():
                continue
            usable = _is_onnx_export(path) if kind == "onnx" else (
                _is_model_folder(path) or _is_model_folder(path / "best") or _is_model_folder(path / "last"))
            if usable:
                choices.append((f"{kind}: {path.name}", str(path)))
    return choices
