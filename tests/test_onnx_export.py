"""engine.onnx.export: parity with torch before anything is kept, a truncated vision graph, int8, the report."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import onnx
import pytest

import engine.onnx.export as export_module
from engine.errors import ExportError, ModelSourceError
from engine.onnx.export import export_onnx, format_report, int8_agreement, report_rows
from engine.onnx.graphs import quantize_graph
from engine.onnx.runtime import OnnxSegmenter, sha256_file

pytestmark = pytest.mark.slow  # the module's export (session fixture) takes several seconds

PROMPTS = ["segment crack", "segment taping area", "segment joint/tape"]  # = conftest.EXPORT_PROMPTS


def read_manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_manifest_records_parity_versions_and_checksums(export_dir, torch_fp32):
    m = read_manifest(export_dir)
    assert m["format_version"] == 1 and m["opset"] >= 17
    assert m["threshold"] == torch_fp32.threshold == 0.5
    assert m["input_size"] == 64 and m["extract_layers"] == [0, 1, 2]
    assert set(m["versions"]) == {"torch", "transformers", "onnx", "onnxruntime"}
    parity = m["parity"]
    assert parity["images"] == 4 and parity["prompts"] == PROMPTS  # 2 random-pixel images + 2 photos
    assert parity["fp32_vs_torch"]["max_abs_logit_diff"] <= 1e-3
    assert 0.0 <= parity["int8_vs_fp32"]["mask_iou"] <= 1.0
    for name, digest in m["files"].items():
        assert sha256_file(export_dir / name) == digest
    assert {"text_encoder.onnx", "vision_encoder.onnx", "decoder.onnx", "text_encoder.int8.onnx",
            "vision_encoder.int8.onnx", "tokenizer.json", "preprocessor_config.json"} <= set(m["files"])
    assert m["graphs"]["int8"]["decoder"] == "decoder.onnx"  # the decoder stays fp32


def test_vision_graph_stops_at_the_deepest_extract_layer(export_dir, torch_fp32):
    assert len(torch_fp32.model.clip.vision_model.encoder.layers) == 4  # layer 3 exists in torch...
    graph = onnx.load(str(export_dir / "vision_encoder.onnx")).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["Softmax"] == 3  # ...but only layers 0-2 are in the graph: one attention each
    assert ops["LayerNormalization"] == 1 + 2 * 3  # pre-layernorm + two per layer
    scopes = {node.name.split("/")[1] for node in graph.node if node.name.startswith("/layers.")}
    assert scopes == {"layers.0", "layers.1", "layers.2"}  # node names carry the module path
    assert not [i.name for i in graph.initializer if "layers.3." in i.name]
    assert [o.name for o in graph.output] == ["act_0", "act_1", "act_2"]


def test_int8_export_loads_and_gives_masks(export_dir, onnx_fp32, photos):
    q8 = OnnxSegmenter(export_dir, threads=2, int8=True)
    assert q8.backend == "onnx-int8"
    assert read_manifest(export_dir)["graphs"]["int8"]["vision_encoder"] == "vision_encoder.int8.onnx"
    maps, ref = q8.predict(photos[0], PROMPTS), onnx_fp32.predict(photos[0], PROMPTS)
    for p in PROMPTS:
        assert maps[p].shape == ref[p].shape
        assert np.abs(maps[p] - ref[p]).max() < 0.05
    assert q8.masks(photos[0], PROMPTS)[PROMPTS[0]].dtype == bool
    assert 0.95 <= int8_agreement(export_dir, photos[:2], PROMPTS, threads=2) <= 1.0


def test_failed_parity_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "exports" / "never"
    monkeypatch.setattr(export_module, "PARITY_TOL", -1.0)  # no export can pass: the failure path runs for real
    with pytest.raises(ExportError, match="do not reproduce"):
        export_onnx(tiny_model_dir, out, images=[], threads=2)
    assert not out.exists() and not list(out.parent.iterdir())  # no half-written folder, no temp left behind


def test_export_of_an_export_is_refused(export_dir, tmp_path):
    with pytest.raises(ModelSourceError, match="already an ONNX export"):
        export_onnx(export_dir, tmp_path / "again")


def test_report_rows_are_the_manifest_figures_as_text(export_dir):
    manifest = read_manifest(export_dir)
    rows = report_rows(manifest, export_dir)
    assert all(isinstance(m, str) and isinstance(v, str) for m, v in rows)
    values = dict(rows)
    parity = manifest["parity"]
    assert values["parity sample"] == f"{parity['images']} images x 3 prompts"
    assert float(values["onnx fp32 vs torch: mask IoU"]) == round(parity["fp32_vs_torch"]["mask_iou"], 4)
    assert values["onnx fp32 vs torch: max |dlogit|"].endswith("(limit 0.001)")
    assert float(values["onnx int8 vs fp32: mask IoU (min)"]) == round(parity["int8_vs_fp32"]["min_mask_iou"], 4)
    assert values["default precision"] == manifest["default_precision"]
    sizes = {m: float(v) for m, v in rows if m.endswith(" (MB)")}
    assert set(sizes) == {f"{n} (MB)" for n in manifest["files"] if n.endswith(".onnx")}
    assert sizes["vision_encoder.onnx (MB)"] == round((export_dir / "vision_encoder.onnx").stat().st_size / 2**20, 1)


def test_format_report_prints_the_rows(export_dir):
    manifest = read_manifest(export_dir)
    report = format_report(manifest, export_dir)
    lines = report.splitlines()
    assert lines[0].startswith(f"exported {manifest['source']} -> {export_dir} (opset 17, input 64 px")
    for measure, value in report_rows(manifest, export_dir):
        if measure.startswith("onnx "):
            assert f"  {measure}: {value}" in lines
    graphs = next(line for line in lines if line.startswith("  graphs: "))
    assert "text_encoder.onnx " in graphs and graphs.endswith(" MB")
    assert lines[-1] == f"  default precision: {manifest['default_precision']}"


def test_report_rows_of_a_manifest_without_parity_do_not_fail(tmp_path):
    rows = dict(report_rows({"source": "x"}, tmp_path))
    assert rows["source"] == "x" and rows["onnx fp32 vs torch: mask IoU"] == "nan"
    assert "onnx int8 vs fp32: mask IoU (mean)" not in rows


def test_quantizing_leaves_the_root_logger_level_alone(export_dir, tmp_path):
    root = logging.getLogger()
    before_level, before_filters = root.level, list(root.filters)
    quantize_graph(export_dir / "decoder.onnx", tmp_path / "decoder.int8.onnx")
    assert (tmp_path / "decoder.int8.onnx").stat().st_size > 0
    assert root.level == before_level and root.filters == before_filters
