"""The `Segmenter` facade: photos and text prompts in, one probability map per prompt out.

Hugging Face's `CLIPSegForImageSegmentation.forward` takes one (image, prompt) pair per batch row, so five
prompts on one photo run the ViT-B/16 vision tower five times, through all 12 layers, although the decoder
reads only layers 3, 6 and 9. Here the vision tower runs once per image and stops at the deepest layer the
decoder reads; text embeddings are cached per prompt; only the small decoder runs per (image, prompt).
The logits equal HF's forward (tested to 1e-4).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.images import image_size, load_image
from engine.precision import resolve_precision
from engine.prediction import Prediction, presence_score, resolve_thresholds, sigmoid
from engine.prompts import as_prompt_list

# Longest side an uploaded photo is decoded at before it is resized to the model's input (352 px): a 12000 px
# JPEG is decoded at 1/8 scale through Pillow's draft mode, so memory stays bounded.
DECODE_MAX_SIDE = 2048


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def normalise(images_uint8: np.ndarray, mean, std) -> np.ndarray:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 pixel_values: scaled to [0, 1], then per-channel mean/std."""
    x = images_uint8.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(1 / 255)
    return (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)


def preprocess_images(images, size: int, mean, std, resample: int = 2) -> np.ndarray:
    """PIL images -> pixel_values (B, 3, size, size) float32, resized and normalised like CLIPSegProcessor.

    mean, std: per-channel (3,) in [0, 1] units; resample: a PIL resampling filter (2 = bilinear).
    """
    resized = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling(resample))) for im in images]
    return normalise(np.stack(resized), mean, std)


class SegmenterBase:
    """The plain-types interface every backend shares (torch here, onnxruntime in `engine.onnx.runtime`).

    A backend sets `input_size`, `threshold`, `name`, `backend`, `meta` (drywall_qa.json: "thresholds",
    "presence_thresholds", "prompts") and `tokenizer`, and implements `preprocess(images)` -> pixel_values
    (B, 3, S, S) and `logits(pixel_values, prompts)` -> (B, P, S, S) float32 before sigmoid (a torch tensor or a
    numpy array). `last_ms` is the model time per photo of the latest call; `max_text_tokens` the text
    encoder's limit (None when unknown).
    """

    backend = "base"
    last_ms = 0.0
    meta: dict = {}
    max_text_tokens: int | None = None

    def predict(self, image, prompts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """One photo (path, bytes, PIL or numpy) -> {prompt: float32 (H, W) in [0, 1]} at its displayed size.

        The raw maps, at full size (4 bytes a pixel per prompt): `prediction` is the bounded path with
        presence and per-prompt thresholds.
        """
        return self.predict_batch([image], prompts)[0]

    def predict_batch(self, images: Sequence, prompts: str | Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Several photos in one forward pass; each result is at that photo's own size."""
        prompts = as_prompt_list(prompts)
        logits, sizes = self._logits_for(images, prompts)
        return [probability_maps(logits[i], prompts, size) for i, size in enumerate(sizes)]

    def prediction(self, image, prompts: str | Sequence[str], *, threshold: float | None = None) -> Prediction:
        """One photo -> a `Prediction` at model resolution: presence, found / not found, masks on demand.

        threshold: None for each prompt's calibrated threshold (`thresholds_for`); a number overrides the
        pixel and the presence threshold of every prompt.
        """
        return self.prediction_batch([image], prompts, threshold=threshold)[0]

    def prediction_batch(self, images: Sequence, prompts: str | Sequence[str], *,
                         threshold: float | None = None) -> list[Prediction]:
        """Several photos in one forward pass -> one `Prediction` each (nothing at the photos' full size)."""
        prompts = as_prompt_list(prompts)
        thresholds = self.thresholds_for(prompts, threshold)
        presence_thresholds = self.presence_thresholds_for(prompts, threshold)
        logits, sizes = self._logits_for(images, prompts)
        logits = np.asarray(logits, dtype=np.float32)
        out = []
        for row, size in zip(logits, sizes):
            maps = dict(zip(prompts, row))
            presence = {p: presence_score(sigmoid(m)) for p, m in maps.items()}
            out.append(Prediction(maps, size, dict(thresholds), dict(presence_thresholds), presence, self.last_ms))
        return out

    def evaluation_maps(self, image, prompts: str | Sequence[str], *, threshold: float | None = None):
        """({prompt: full-size raw probability map, as `predict`}, {prompt: presence}) from one forward pass.

        For evaluation, which scores full-size maps against full-size labels (photos of data-set size).
        """
        pred = self.prediction(image, prompts, threshold=threshold)
        maps = probability_maps(np.stack([pred.logits[p] for p in pred.prompts]), pred.prompts, pred.size)
        return maps, pred.presence

    def _logits_for(self, images: Sequence, prompts: list[str]):
        """(logits (B, P, S, S) before sigmoid, [(width, height) displayed per photo]); sets last_ms."""
        self.check_prompts(prompts)
        loaded, sizes = [], []
        for src in images:
            im, size = _load_with_size(src)
            loaded.append(im)
            sizes.append(size)
        start = time.perf_counter()
        logits = self.logits(self.preprocess(loaded), prompts)
        self.last_ms = (time.perf_counter() - start) * 1000 / max(1, len(images))
        return logits, sizes

    # -- thresholds and prompts --------------------------------------------------------------------------

    def thresholds_for(self, prompts: Sequence[str], override: float | None = None) -> dict[str, float]:
        """{prompt: pixel threshold}: override, else drywall_qa.json "thresholds"[p], else `self.threshold`."""
        return resolve_thresholds(prompts, self.threshold, self.meta.get("thresholds"), override)

    def presence_thresholds_for(self, prompts: Sequence[str], override: float | None = None) -> dict[str, float]:
        """{prompt: presence threshold}: override, else "presence_thresholds"[p], else the pixel threshold."""
        pixel = self.thresholds_for(prompts, override)
        if override is not None:
            return pixel
        calibrated = self.meta.get("presence_thresholds") or {}
        return {p: float(calibrated.get(p, pixel[p])) for p in prompts}

    @property
    def trained_prompts(self) -> list[str]:
        """The prompts drywall_qa.json says the model was trained on ([] for a Hub model, which reads any text)."""
        prompts = self.meta.get("prompts") or []
        if isinstance(prompts, dict):  # {name: [synonyms]}
            prompts = [p for group in prompts.values() for p in ([group] if isinstance(group, str) else group)]
        return [str(p) for p in prompts]

    def prompt_warning(self, prompts: str | Sequence[str]) -> str | None:
        """A line for the user when a prompt is outside the model's trained prompts, else None."""
        trained = self.trained_prompts
        unknown = [p for p in as_prompt_list(prompts) if trained and p not in trained]
        if not unknown:
            return None
        return (f"{', '.join(repr(p) for p in unknown)}: not a prompt this model learned, its mask means little; "
                f"this model was trained on: {', '.join(repr(p) for p in trained)}.")

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise ValueError naming the limit when a prompt is longer than the text encoder takes."""
        limit = self.max_text_tokens
        if not limit:
            return
        for p in prompts:
            n = len(self.tokenizer(p)["input_ids"])
            if n > limit:
                raise ValueError(f"Prompt {p[:60]!r}{'...' if len(p) > 60 else ''} is {n} tokens long; this model's "
                                 f"text encoder takes at most {limit} tokens (max_position_embeddings, "
                                 "start and end included): shorten it to a few words, e.g. 'segment crack'.")

    def masks(self, image, prompts: str | Sequence[str], threshold: float | None = None) -> dict[str, np.ndarray]:
        """{prompt: bool (H, W)}: each prompt's mask at its own threshold (or `threshold` for all), empty when
        the prompt is not found (see `engine.prediction`)."""
        pred = self.prediction(image, prompts, threshold=threshold)
        return {p: pred.mask(p) for p in pred.prompts}

    def predict_ensemble(self, image, synonyms: dict[str, Sequence[str]]) -> dict[str, np.ndarray]:
        """Prompt ensemble: {name: [synonym, ...]} -> {name: mean of the synonyms' probability maps}."""
        flat = as_prompt_list([s for group in synonyms.values() for s in group])
        maps = self.predict(image, flat)
        return {name: np.mean([maps[s.strip()] for s in as_prompt_list(group)], axis=0).astype(np.float32)
                for name, group in synonyms.items()}


def vision_activations(model, pixel_values, extract_layers: Sequence[int]) -> list:
    """CLIPSeg's vision tower, run only up to the deepest layer the decoder reads.

    pixel_values: (B, 3, S, S). Returns one (B, 1 + (S/patch)^2, hidden) tensor per extract layer, in
    `extract_layers` order: the outputs of those encoder layers (HF's `hidden_states[i + 1]`). Gradients flow
    when the caller allows them (training unfrozen layers).
    """
    return tower_activations(model.clip.vision_model, pixel_values, extract_layers)


def tower_activations(vision, pixel_values, extract_layers: Sequence[int]) -> list:
    """`vision_activations` on a CLIP vision model itself (e.g. a bf16 copy made for the feature cache)."""
    hidden = vision.pre_layrnorm(vision.embeddings(pixel_values, interpolate_pos_encoding=True))
    wanted = set(extract_layers)
    outputs = {}
    for i, layer in enumerate(vision.encoder.layers[: max(wanted) + 1]):
        hidden = layer(hidden, None)
        if i in wanted:
            outputs[i] = hidden
    return [outputs[i] for i in extract_layers]


class Segmenter(SegmenterBase):
    """CLIPSeg through PyTorch. `predict(image, prompts)` -> {prompt: float32 (H, W) in [0, 1]}.

    model: a `CLIPSegForImageSegmentation`; tokenizer and processor: its CLIP tokenizer and ViT image
    processor (size, mean and std are read from it). `threshold` is the model's calibrated default.
    `precision`: "fp32", "bf16" (the text and vision towers' matmuls in bf16, everything else in fp32; see
    `bf16_matmuls`), or "auto" (the faster of the two as measured on this machine: `engine.precision`;
    `precision_reason` says why, e.g. "fp32: bf16 measured 1.7x slower here").
    threads: the CPU threads this segmenter is meant to run with, kept as `self.threads` (default: torch's
    current setting). It is not applied here: torch's thread count is process-wide, and the entry points (the
    CLI, the app, the benchmark child) set it once.
    """

    backend = "torch"

    def __init__(self, model, tokenizer, processor, *, threshold: float = 0.4, name: str = "model",
                 threads: int | None = None, precision: str = "fp32", device: str = "cpu", meta: dict | None = None):
        self.threads = threads or torch.get_num_threads()
        # "auto" is measured on this machine (engine.precision), never guessed from CPU flags
        choice = resolve_precision(precision, device, self.threads)
        precision, self.precision_reason = choice.precision, choice.reason
        self.precision = precision
        self.dtype = torch.float32  # of the activations between modules, in both precisions
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, self.dtype)
        if precision == "bf16":
            bf16_matmuls(self.model.clip)
        self.tokenizer = tokenizer
        self.processor = processor  # kept for export, which writes its config beside the graphs
        self.input_size = int(processor.size["height"])
        self.mean = np.asarray(processor.image_mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(processor.image_std, dtype=np.float32).reshape(3, 1, 1)
        self.resample = int(getattr(processor, "resample", 2))
        self.threshold = float(threshold)
        self.name = name
        self.meta = dict(meta or {})
        self.extract_layers = list(model.config.extract_layers)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._text_cache: dict[str, torch.Tensor] = {}

    # -- preprocessing -------------------------------------------------------------------------------

    def preprocess(self, images) -> torch.Tensor:
        """PIL RGB images -> pixel_values (B, 3, S, S) float32, resized and normalised like CLIPSegProcessor."""
        return torch.from_numpy(preprocess_images(images, self.input_size, self.mean, self.std, self.resample))

    # -- the three steps ---------------------------------------------------------------------------------

    def vision_activations(self, pixel_values) -> list:
        """The vision tower up to the deepest extract layer (the module-level `vision_activations`)."""
        return vision_activations(self.model, pixel_values.to(self.device, self.dtype), self.extract_layers)

    def text_embeddings(self, prompts: Sequence[str]):
        """(P, projection_dim) conditional embeddings, computed once per distinct prompt and cached."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing, padding=True, return_tensors="pt")
            with torch.inference_mode():
                emb = self.model.clip.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device)
                ).pooler_output
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[p] for p in prompts])

    def decode(self, activations: list, conditional) -> torch.Tensor:
        """Decoder for every (image, prompt) pair.

        activations: from `vision_activations` (batch B); conditional: (P, D). Returns logits
        (B, P, S, S) float32, before sigmoid.
        """
        b, p = activations[0].shape[0], conditional.shape[0]
        acts = [a.repeat_interleave(p, dim=0) for a in activations]
        cond = conditional.to(self.dtype).repeat(b, 1)
        logits = self.model.decoder(acts, cond).logits
        return logits.reshape(b, p, *logits.shape[-2:]).float()

    def logits(self, pixel_values, prompts: Sequence[str]) -> torch.Tensor:
        """pixel_values (B, 3, S, S) -> logits (B, P, S, S) float32, before sigmoid."""
        with torch.inference_mode():
            return self.decode(self.vision_activations(pixel_values), self.text_embeddings(list(prompts)))


def bf16_matmuls(module) -> None:
    """Run every nn.Linear inside `module` in bf16, in place: bf16 weights, input cast in, output cast back.

    LayerNorm, softmax, the residual stream (and the decoder, which is not passed here) stay fp32. Measured on
    the full-size architecture (1 thread, AVX-512 BF16): as fast as casting the whole model to bf16 (+2%, both
    2.7x faster than fp32), with masks much closer to fp32 (IoU 0.996 vs 0.983 at the median threshold).
    """
    def cast_in(_, args):
        return (args[0].to(torch.bfloat16), *args[1:])

    def cast_out(_, __, output):
        return output.float()

    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.to(torch.bfloat16)
            sub.register_forward_pre_hook(cast_in)
            sub.register_forward_hook(cast_out)


def _load_with_size(src):
    """(RGB image decoded at most DECODE_MAX_SIDE px, (width, height) as displayed)."""
    if isinstance(src, (Image.Image, np.ndarray)):  # already in memory: no decode to save
        im = load_image(src)
        return im, im.size
    return load_image(src, max_side=DECODE_MAX_SIDE), image_size(src)


# Pixels upsampled per call in `probability_maps`: all prompts of a 640 px photo at once (few parallel regions,
# which matters on a busy CPU), a few at a time for a 2048 px one (bounded memory).
UPSAMPLE_CHUNK_PIXELS = 16_000_000


def probability_maps(logits, prompts: list[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """logits (P, S, S) torch or numpy -> {prompt: sigmoid upsampled bilinearly to (H, W) = size[::-1], float32}."""
    w, h = size
    logits = torch.as_tensor(logits)
    chunk = max(1, UPSAMPLE_CHUNK_PIXELS // (w * h))
    out = {}
    with torch.inference_mode():
        for start in range(0, len(prompts), chunk):
            up = torch.nn.functional.interpolate(logits[None, start : start + chunk], size=(h, w), mode="bilinear",
                                                 align_corners=False)
            probs = torch.sigmoid_(up[0]).numpy()
            out.update(zip(prompts[start : start + chunk], probs.astype(np.float32, copy=False)))
    return out


