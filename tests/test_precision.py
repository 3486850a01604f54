"""engine/precision.py: auto precision by measurement, cached per machine key, overridable."""

import json

import pytest
import torch

from engine.precision import ENV_VAR, choose_precision, machine_key, measure, pick


def test_pick_keeps_the_faster_and_says_by_how_much():
    assert pick(2.0, 1.0).precision == "bf16" and "2.0x faster" in pick(2.0, 1.0).reason
    slower = pick(1.0, 2.0)
    assert slower.precision == "fp32" and "2.0x slower" in slower.reason
    assert pick(1.0, 0.99).precision == "fp32"  # a tie goes to the reference


def test_environment_variable_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, "bf16")
    choice = choose_precision(2, path=tmp_path / "p.json")
    assert choice.precision == "bf16" and ENV_VAR in choice.reason
    assert not (tmp_path / "p.json").exists()
    monkeypatch.setenv(ENV_VAR, "fp16")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='fp16': use one of fp32, bf16"):
        choose_precision(2, path=tmp_path / "p.json")


def test_a_cached_decision_is_reused_without_measuring(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "p.json"
    fake = {"precision": "bf16", "reason": "bf16: measured 9.9x faster than fp32 here", "fp32_s": 9.9, "bf16_s": 1.0}
    path.write_text(json.dumps({machine_key(3): fake, "another machine": {**fake, "precision": "fp32"}}))
    assert choose_precision(3, path=path).fp32_s == 9.9


def test_a_fresh_measurement_is_cached_under_this_machines_key(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "sub" / "p.json"
    choice = choose_precision(2, path=path)
    assert choice.precision in ("fp32", "bf16") and choice.fp32_s > 0 and choice.bf16_s > 0
    key = machine_key(2)
    assert f"torch {torch.__version__}" in key and key.endswith("2 threads")
    assert json.loads(path.read_text())[key]["precision"] == choice.precision


def test_measure_times_both_precisions():
    fp32_s, bf16_s = measure(rounds=1)
    assert fp32_s > 0 and bf16_s > 0  # durations; no bound on them: a loaded machine may take any time


def test_auto_precision_of_a_segmenter_follows_the_choice(monkeypatch, tiny_model_dir):
    from engine.models import load_segmenter

    monkeypatch.setenv(ENV_VAR, "bf16")
    seg = load_segmenter(tiny_model_dir, precision="auto")
    assert seg.precision == "bf16" and ENV_VAR in seg.precision_reason
    monkeypatch.setenv(ENV_VAR, "fp32")
    assert load_segmenter(tiny_model_dir, precision="auto").precision == "fp32"
    assert load_segmenter(tiny_model_dir, precision="bf16").precision_reason == "bf16: asked for"
