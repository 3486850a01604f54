"""ONNX export and runtime: parity with torch, a truncated vision graph, int8, loud failures, the CLI; bf16."""

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import engine.onnx.export as export_module
from engine.cli import main as cli_main
from engine.onnx.export import ExportError, export_onnx, int8_agreement, mask_iou
from engine.models import ModelSourceError, load_segmenter
from engine.onnx.runtime import OnnxSegmenter, sha256_file

PROMPTS = ["segment crack", "segment taping area", "segment joint/tape"]


@pytest.fixture(scope="module")
def photos(shared_data):
    paths = sorted((shared_data / "cracks" / "valid" / "images").glob("*.jpg"))[:3]
    assert len(paths) == 3
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny"
    export_onnx(tiny_model_dir, out, int8=True, images=photos[:2], prompts=PROMPTS, threads=2)
    return out


@pytest.fixture(scope="module")
def onnx_fp32(export_dir):
    return OnnxSegmenter(export_dir, threads=2, int8=False)


@pytest.fixture(scope="module")
def torch_fp32(tiny_model_dir):
    """The torch reference in fp32 (the default precision may be bf16 on this CPU)."""
    return load_segmenter(tiny_model_dir, threads=2, precision="fp32")


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


def test_onnx_logits_equal_torch(onnx_fp32, torch_fp32, photos):
    pixel_values = np.concatenate([onnx_fp32.preprocess(photos), np.random.default_rng(0).normal(size=(1, 3, 64, 64))])
    ours = onnx_fp32.logits(pixel_values.astype(np.float32), PROMPTS)
    ref = torch_fp32.logits(torch.from_numpy(pixel_values.astype(np.float32)), PROMPTS).numpy()
    assert ours.shape == ref.shape == (4, 3, 64, 64)
    assert ref.std() > 1e-3  # not two constants
    assert np.abs(ours - ref).max() <= 1e-4


def test_text_graph_takes_any_number_and_length_of_prompts(onnx_fp32, torch_fp32):
    prompts = ["a", "segment crack", "segment the long taped joint between two drywall boards near the ceiling"]
    lengths = [len(ids) for ids in torch_fp32.tokenizer(prompts)["input_ids"]]
    assert len(set(lengths)) == 3  # three sequence lengths, none of them the one traced at export
    ours = onnx_fp32.text_embeddings(prompts)
    assert ours.shape == (3, 32)
    np.testing.assert_allclose(ours, torch_fp32.text_embeddings(prompts).numpy(), atol=1e-5)
    np.testing.assert_allclose(onnx_fp32.text_embeddings(prompts[2:]), ours[2:], atol=1e-6)  # batch of one


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


def test_decoder_takes_pairs_or_one_photo_broadcast_over_prompts(onnx_fp32, photos):
    acts = onnx_fp32.vision_activations(onnx_fp32.preprocess(photos[:1]))
    cond = onnx_fp32.text_embeddings(PROMPTS)
    decoder = onnx_fp32.sessions["decoder"]
    names = [i.name for i in decoder.get_inputs()]
    broadcast = decoder.run(None, {**dict(zip(names, acts)), "conditional": cond})[0]
    pairs = decoder.run(None, {**{n: np.repeat(a, 3, axis=0) for n, a in zip(names, acts)}, "conditional": cond})[0]
    assert broadcast.shape == pairs.shape == (3, 64, 64)
    np.testing.assert_allclose(broadcast, pairs, atol=1e-5)


def test_masks_equal_torch_on_real_photos(onnx_fp32, torch_fp32, photos):
    for photo in photos:
        ref = torch_fp32.predict(photo, PROMPTS)
        ours = onnx_fp32.predict(photo, PROMPTS)
        for p in PROMPTS:
            assert ours[p].shape == (photo.height, photo.width) and ours[p].dtype == np.float32
            t = float(np.median(ref[p]))  # a threshold that splits the map: both masks are half full
            assert mask_iou(ours[p] >= t, ref[p] >= t) >= 0.99
            np.testing.assert_allclose(ours[p], ref[p], atol=1e-5)


def test_batch_ensemble_masks_and_text_cache(onnx_fp32, photos):
    assert onnx_fp32.backend == "onnx-fp32" and onnx_fp32.input_size == 64 and onnx_fp32.threshold == 0.5
    batch = onnx_fp32.predict_batch(photos[:2], PROMPTS)
    assert onnx_fp32.last_ms > 0
    for photo, maps in zip(photos[:2], batch):
        single = onnx_fp32.predict(photo, PROMPTS)
        for p in PROMPTS:
            np.testing.assert_allclose(maps[p], single[p], atol=1e-5)
    ens = onnx_fp32.predict_ensemble(photos[0], {"taping": PROMPTS[1:]})
    np.testing.assert_allclose(ens["taping"], (batch[0][PROMPTS[1]] + batch[0][PROMPTS[2]]) / 2, atol=1e-6)
    masks = onnx_fp32.masks(photos[0], PROMPTS[0], threshold=0.0)
    assert masks[PROMPTS[0]].dtype == bool and masks[PROMPTS[0]].all()
    cached = onnx_fp32._text_cache["segment crack"]
    before = set(onnx_fp32._text_cache)
    onnx_fp32.text_embeddings(["segment crack", "brand new prompt"])
    assert set(onnx_fp32._text_cache) - before == {"brand new prompt"}  # one entry per distinct prompt
    assert onnx_fp32._text_cache["segment crack"] is cached  # computed once, then served from the cache


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


def test_load_segmenter_picks_the_export_and_its_precision(export_dir, tiny_model_dir):
    from engine.segmenter import cpu_supports_bf16

    assert load_segmenter(tiny_model_dir, threads=2).precision == ("bf16" if cpu_supports_bf16() else "fp32")
    default = load_segmenter(export_dir, threads=2)
    assert isinstance(default, OnnxSegmenter)
    assert default.precision == read_manifest(export_dir)["default_precision"]
    assert load_segmenter(str(export_dir), threads=2, precision="fp32").backend == "onnx-fp32"
    assert load_segmenter(str(export_dir), threads=2, precision="int8").backend == "onnx-int8"
    with pytest.raises(ModelSourceError, match="fp32 or int8"):
        load_segmenter(export_dir, precision="bf16")
    with pytest.raises(ModelSourceError, match="python -m engine export"):
        load_segmenter(tiny_model_dir, precision="int8")


def broken_copy(export_dir, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(export_dir, dst)
    return dst


def test_missing_graph_is_a_clear_error(export_dir, tmp_path):
    broken = broken_copy(export_dir, tmp_path)
    (broken / "vision_encoder.onnx").unlink()
    with pytest.raises(ModelSourceError, match=r"incomplete: vision_encoder\.onnx is missing.*python -m engine export"):
        load_segmenter(broken, precision="fp32")


def test_other_format_version_is_a_clear_error(export_dir, tmp_path):
    broken = broken_copy(export_dir, tmp_path)
    m = read_manifest(broken)
    m["format_version"] = 99
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelSourceError, match=r"format version 99.*python -m engine export"):
        load_segmenter(broken)


def test_corrupted_graph_is_a_clear_error(export_dir, tmp_path):
    broken = broken_copy(export_dir, tmp_path)
    data = bytearray((broken / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match=r"corrupt: decoder\.onnx does not match its sha256"):
        load_segmenter(broken, precision="fp32")
    # A file that matches its checksum but is no graph (a bad export tool) fails in onnxruntime, also clearly.
    (broken / "decoder.onnx").write_bytes(b"not an onnx graph")
    m = read_manifest(broken)
    m["files"]["decoder.onnx"] = sha256_file(broken / "decoder.onnx")
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelSourceError, match=r"onnxruntime cannot load .*decoder\.onnx.*python -m engine export"):
        load_segmenter(broken, precision="fp32")


def test_failed_parity_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "exports" / "never"
    monkeypatch.setattr(export_module, "PARITY_TOL", -1.0)  # no export can pass: the failure path runs for real
    with pytest.raises(ExportError, match="do not reproduce"):
        export_onnx(tiny_model_dir, out, images=[], threads=2)
    assert not out.exists() and not list(out.parent.iterdir())  # no half-written folder, no temp left behind


def test_export_of_an_export_is_refused(export_dir, tmp_path):
    with pytest.raises(ModelSourceError, match="already an ONNX export"):
        export_onnx(export_dir, tmp_path / "again")


def test_cli_export_prints_the_parity_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli-export"
    assert cli_main(["export", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "onnx fp32 vs torch: max |dlogit|" in report and "default precision: fp32" in report
    assert isinstance(load_segmenter(out), OnnxSegmenter)


def test_bf16_maps_are_close_to_fp32(tiny_model_dir, torch_fp32, photos):
    bf16 = load_segmenter(tiny_model_dir, threads=2, precision="bf16")
    vision = bf16.model.clip.vision_model.encoder.layers[0]
    assert bf16.precision == "bf16" and vision.mlp.fc1.weight.dtype == torch.bfloat16
    assert vision.layer_norm1.weight.dtype == torch.float32  # only the matmuls run in bf16
    for photo in photos[:2]:
        ours, ref = bf16.predict(photo, PROMPTS), torch_fp32.predict(photo, PROMPTS)
        for p in PROMPTS:
            assert ours[p].dtype == np.float32
            assert np.abs(ours[p] - ref[p]).max() < 0.02
