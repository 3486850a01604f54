"""engine.onnx.runtime: an export run by onnxruntime equals torch; loads pick the precision; loud failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.errors import ModelSourceError
from engine.models import load_segmenter
from engine.onnx.export import mask_iou
from engine.onnx.runtime import OnnxSegmenter, sha256_file
from engine.segmenter import cpu_supports_bf16

pytestmark = pytest.mark.slow  # needs the session's export (several seconds)

PROMPTS = ["segment crack", "segment taping area", "segment joint/tape"]  # = conftest.EXPORT_PROMPTS


def read_manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


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


def test_load_segmenter_picks_the_export_and_its_precision(export_dir, tiny_model_dir):
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


def test_threads_are_a_session_option_not_a_process_setting(export_dir):
    before = torch.get_num_threads()
    seg = OnnxSegmenter(export_dir, threads=1, int8=False)
    assert seg.threads == 1 and torch.get_num_threads() == before
