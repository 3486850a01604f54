"""Model folders on disk: the one writer (`save_model_folder`) and the one reader (`load_clipseg`, `read_meta`).

A model folder is a Hugging Face folder (config.json, model.safetensors, tokenizer files,
preprocessor_config.json) plus this project's `drywall_qa.json` (threshold, prompts, training summary).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer, CLIPSegForImageSegmentation
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from engine.errors import ModelSourceError
from engine.fileio import replace_dir
from engine.models.configs import fit_config_to_tokenizer, new_model, processor_size_for, tiny_config
from engine.models.tokenizer import build_tokenizer
from engine.paths import META_FILE


def image_processor(size: int = 352):
    """CLIPSeg's preprocessing: resize to size x size (bilinear), scale to [0, 1], ImageNet mean/std."""
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
    tokenizer = build_tokenizer()
    config = fit_config_to_tokenizer(config or tiny_config(), tokenizer)
    model = new_model(config, seed=seed)
    size = processor_size_for(config)
    return save_model_folder(model, tokenizer, out_dir, image_size=size, meta=meta)


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
    folder = Path(folder)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelSourceError(f"{folder} has config.json but no weights (*.safetensors); the download or save is "
                               "incomplete.")
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
