"""The Segmenter facade: equal to HF's forward, vision once per image, truncated tower, cached text."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPSegForImageSegmentation

from engine.models import fit_config_to_tokenizer, full_size_config, image_processor, load_segmenter, tiny_config
from engine.models.tokenizer import build_tokenizer
from engine.segmenter import Segmenter

PROMPTS = ["segment crack", "segment taping area", "segment joint/tape"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def hf_logits(model, tokenizer, pixel_values, prompts):
    """HF's own forward: one (image, prompt) pair per row -> (B, P, S, S)."""
    b, p = pixel_values.shape[0], len(prompts)
    tokens = tokenizer(prompts * b, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=pixel_values.repeat_interleave(p, dim=0)).logits
    return out.reshape(b, p, *out.shape[-2:])


def make_segmenter(config, tokenizer, size):
    torch.manual_seed(0)
    # HF's own random init (not our decoder re-init): large, varied logits make the parity check strict.
    model = CLIPSegForImageSegmentation(fit_config_to_tokenizer(config, tokenizer)).eval()
    return Segmenter(model, tokenizer, image_processor(size), threads=2)


def test_equals_hf_forward_on_tiny_config(tokenizer):
    seg = make_segmenter(tiny_config(), tokenizer, 64)
    pixel_values = torch.randn(2, 3, 64, 64)
    ours = seg.logits(pixel_values, PROMPTS)
    ref = hf_logits(seg.model, tokenizer, pixel_values, PROMPTS)
    assert ours.shape == (2, 3, 64, 64)
    assert ref.std() > 0.1  # the comparison below is not between two constants
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_equals_hf_forward_on_full_size_architecture(tokenizer):
    seg = make_segmenter(full_size_config(), tokenizer, 352)
    pixel_values = torch.randn(1, 3, 352, 352)
    prompts = PROMPTS[:2]
    ours = seg.logits(pixel_values, prompts)
    ref = hf_logits(seg.model, tokenizer, pixel_values, prompts)
    assert ours.shape == (1, 2, 352, 352)
    assert (ours - ref).abs().max().item() <= 1e-4


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_vision_runs_once_per_image_and_stops_at_the_deepest_extract_layer(tokenizer):
    seg = make_segmenter(tiny_config(), tokenizer, 64)
    layers = seg.model.clip.vision_model.encoder.layers
    assert max(seg.extract_layers) == len(layers) - 2  # tiny config: the last layer is past the deepest
    hooks = [count_calls(layer) for layer in layers]
    embed_calls, embed_hook = count_calls(seg.model.clip.vision_model.embeddings)
    seg.logits(torch.randn(2, 3, 64, 64), PROMPTS + ["segment drywall seam", "segment wall crack"])
    assert len(embed_calls) == 1  # one batched pass for 2 images x 5 prompts
    assert [len(c) for c, _ in hooks] == [1, 1, 1, 0]
    for _, h in hooks + [(None, embed_hook)]:
        h.remove()


def test_text_embeddings_are_cached_per_prompt(tokenizer):
    seg = make_segmenter(tiny_config(), tokenizer, 64)
    calls, hook = count_calls(seg.model.clip.text_model)
    seg.text_embeddings(["segment crack", "segment taping area"])
    seg.text_embeddings(["segment taping area", "segment crack"])
    seg.text_embeddings(["segment crack", "segment seam"])
    hook.remove()
    assert len(calls) == 2  # the second call hit the cache; the third computed only the new prompt
    assert len(seg._text_cache) == 3


def test_predict_returns_maps_at_the_photo_size(tiny_segmenter):
    photo = Image.fromarray((np.random.default_rng(0).random((90, 130, 3)) * 255).astype(np.uint8))
    maps = tiny_segmenter.predict(photo, ["segment crack", "segment taping area"])
    assert list(maps) == ["segment crack", "segment taping area"]
    for m in maps.values():
        assert m.shape == (90, 130) and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0


def test_batch_equals_one_by_one(tiny_segmenter):
    rng = np.random.default_rng(1)
    photos = [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for h, w in [(64, 64), (80, 50)]]
    batch = tiny_segmenter.predict_batch(photos, PROMPTS)
    for photo, maps in zip(photos, batch):
        single = tiny_segmenter.predict(photo, PROMPTS)
        for p in PROMPTS:
            np.testing.assert_allclose(maps[p], single[p], atol=1e-5)


def test_masks_use_the_model_threshold(tiny_segmenter):
    photo = Image.new("RGB", (64, 64), (200, 200, 190))
    maps = tiny_segmenter.predict(photo, "segment crack")
    masks = tiny_segmenter.masks(photo, "segment crack")
    assert masks["segment crack"].dtype == bool
    np.testing.assert_array_equal(masks["segment crack"], maps["segment crack"] >= tiny_segmenter.threshold)
    low = tiny_segmenter.masks(photo, "segment crack", threshold=0.0)
    assert low["segment crack"].all()


def test_ensemble_is_the_mean_of_the_synonyms(tiny_segmenter):
    photo = Image.new("RGB", (64, 64), (120, 130, 140))
    synonyms = ["segment taping area", "segment joint/tape"]
    maps = tiny_segmenter.predict(photo, synonyms)
    ens = tiny_segmenter.predict_ensemble(photo, {"taping": synonyms})
    np.testing.assert_allclose(ens["taping"], (maps[synonyms[0]] + maps[synonyms[1]]) / 2, atol=1e-6)


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


# ------------------------------------------------------------------ per-prompt thresholds, presence, prompts


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny model whose drywall_qa.json lists its prompts and a threshold for one of them."""
    from engine.models import make_random_model_folder

    folder = make_random_model_folder(tmp_path_factory.mktemp("calibrated") / "m", meta={
        "threshold": 0.5, "prompts": ["segment crack", "segment taping area"],
        "thresholds": {"segment crack": 0.0}, "presence_thresholds": {"segment taping area": 1.0}})
    return load_segmenter(folder, threads=2, precision="fp32")


def test_per_prompt_thresholds_are_the_ones_applied(calibrated):
    photo = np.full((40, 60, 3), 128, np.uint8)
    pred = calibrated.prediction(photo, ["segment crack", "segment taping area", "segment wall"])
    assert pred.thresholds == {"segment crack": 0.0, "segment taping area": 0.5, "segment wall": 0.5}
    assert pred.presence_thresholds == {"segment crack": 0.0, "segment taping area": 1.0, "segment wall": 0.5}
    assert pred.mask("segment crack").all()  # threshold 0: every pixel
    assert not pred.found("segment taping area") and not pred.mask("segment taping area").any()
    assert pred.mask("segment taping area", raw=True).shape == (40, 60)
    override = calibrated.prediction(photo, ["segment crack"], threshold=0.7)
    assert override.thresholds == {"segment crack": 0.7} == override.presence_thresholds
    assert 0.0 <= pred.presence["segment wall"] <= 1.0


def test_a_prompt_outside_the_trained_list_is_named_with_the_list(calibrated, tiny_segmenter):
    message = calibrated.prompt_warning(["segment crack", "find mould"])
    assert message.startswith("'find mould'") and "segment crack'" not in message.split(":")[0]
    assert "this model was trained on: 'segment crack', 'segment taping area'" in message
    assert calibrated.prompt_warning(["segment crack"]) is None
    assert tiny_segmenter.prompt_warning(["find mould"]) is None  # no list (a Hub model): any text is fine


def test_a_prompt_longer_than_the_text_encoder_takes_is_refused(calibrated):
    long_prompt = " ".join(["segment the long diagonal hairline crack"] * 6)
    with pytest.raises(ValueError, match=r"at most 32 tokens \(max_position_embeddings"):
        calibrated.predict(np.zeros((16, 16, 3), np.uint8), [long_prompt])
