"""engine/train/precision.py: a run that trains the tower picks fp32 or bf16 from its own measured step."""

import json

import pytest
import torch

from engine.models import load_clipseg
from engine.precision import PrecisionChoice
from engine.segmenter import cpu_supports_bf16
from engine.train import make_config
from engine.train.model import build_trainee, forward_logits
from engine.train.precision import measure_training, model_key, pick_training, training_precision


def _forward(model):
    layers = list(model.config.extract_layers)
    return lambda m, px, ids, mask: forward_logits(m, px, ids, mask, layers)


def test_bf16_only_where_its_step_is_clearly_faster():
    assert pick_training(1.0, 0.5).precision == "bf16"
    assert pick_training(1.0, 0.99).precision == "fp32"  # within MIN_SPEEDUP: a tie goes to fp32
    slower = pick_training(1.0, 2.0)
    assert slower.precision == "fp32" and "0.50x" in slower.reason


def test_measuring_times_both_and_changes_no_weight(tiny_model_dir):
    model = load_clipseg(tiny_model_dir)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp32_s, bf16_s = measure_training(model, _forward(model), 64, rounds=1, batch=2)
    assert fp32_s > 0 and bf16_s > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16: fp32 is used unmeasured")
def test_the_choice_is_cached_per_model_shape_and_size(tiny_model_dir, tmp_path):
    model = load_clipseg(tiny_model_dir)[0]
    path = tmp_path / "precision.json"
    first = training_precision(model, _forward(model), 64, path=path)
    key = model_key(model, 64, torch.get_num_threads())
    assert json.loads(path.read_text())[key]["precision"] == first.precision
    # a cached decision is read back, not measured again
    path.write_text(json.dumps({key: {"precision": "bf16", "reason": "cached here"}}))
    assert training_precision(model, _forward(model), 64, path=path) == PrecisionChoice("bf16", "cached here")
    assert model_key(model, 96, torch.get_num_threads()) != key


def test_a_tower_run_measures_and_a_decoder_run_stays_fp32(tiny_model_dir):
    tower = build_trainee(make_config(None, model=str(tiny_model_dir), train="all", image_size=64), torch.device("cpu"))
    assert tower.mode == "full" and tower.precision_reason.split(":")[0] in ("fp32", "bf16")
    assert tower.amp_dtype == (torch.bfloat16 if tower.precision_reason.startswith("bf16") else None)
    decoder = build_trainee(make_config(None, model=str(tiny_model_dir), image_size=64), torch.device("cpu"))
    assert decoder.amp_dtype is None and decoder.precision_reason == ""
    asked = build_trainee(make_config(None, model=str(tiny_model_dir), train="all", image_size=64, amp_dtype="fp32"),
                          torch.device("cpu"))
    assert asked.amp_dtype is None and asked.precision_reason == ""


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="amp_dtype must be"):
        make_config(None, amp_dtype="fp8")
