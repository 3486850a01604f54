"""The three ONNX graphs of a CLIPSeg model, as torch modules, and how each is written and quantized.

The Hugging Face submodules are re-used as they are (nothing is copied but the vision position table), so the
graphs compute what `engine.segmenter.Segmenter` computes: text encoder, truncated vision encoder, decoder.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from engine.onnx.runtime import graph_file

OPSET = 17  # LayerNormalization is a single op from 17 on
# The logger onnxruntime.quantization writes its pre-processing hint to at every call (the root logger).
_QUANTIZER_LOGGER = logging.getLogger()


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


def eager_copy(model):
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
    model = eager_copy(seg.model)
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
    with _quiet_quantizer_hint():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                         extra_options={"MatMulConstBOnly": True})


class _QuantizerFilter(logging.Filter):
    """Drops the warnings and infos onnxruntime.quantization logs on the root logger; all else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return not (from_quantizer and record.levelno < logging.ERROR)


class _quiet_quantizer_hint:
    """Within the block, onnxruntime.quantization's warnings (a pre-processing hint at every call) are dropped.

    The quantizer logs through the root logger itself (`logging.warning`), so a filter on the root logger that
    matches only its records, added and removed here: nobody's log level changes, and records other code
    logs meanwhile pass through.
    """

    def __enter__(self):
        self._filter = _QuantizerFilter()
        _QUANTIZER_LOGGER.addFilter(self._filter)
        return self

    def __exit__(self, *exc):
        _QUANTIZER_LOGGER.removeFilter(self._filter)
        return False
