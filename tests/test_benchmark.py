"""engine/benchmark.py: the matmul peaks, the FLOP count and the roofline fields of the inference benchmark.

The full benchmark (full-size model, minutes) stays out of the tests: they run it on the tiny model."""

import pytest
import torch

from engine.benchmark import (
    BACKENDS,
    PROMPT_COUNTS,
    count_flops,
    default_photos,
    format_table,
    matmul_peaks,
    onnx_matmul_gflops,
    roofline,
    run_inference_benchmark,
    torch_matmul_gflops,
)
from engine.precision import ENV_VAR


def test_count_flops_counts_a_matmul():
    layer, x = torch.nn.Linear(8, 4, bias=False), torch.ones(2, 8)
    assert count_flops(lambda: layer(x)) == 2 * 2 * 8 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_matmul_gflops_is_positive(dtype):
    assert torch_matmul_gflops(dtype, size=64, rounds=1) > 0


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_onnx_matmul_gflops_is_positive(precision):
    assert onnx_matmul_gflops(precision, size=64, rounds=1, threads=1) > 0


def test_onnx_matmul_gflops_names_the_precisions_it_runs():
    with pytest.raises(ValueError, match="'int8' or 'fp32'"):
        onnx_matmul_gflops("bf16", size=64, rounds=1, threads=1)


def test_matmul_peaks_has_one_positive_peak_per_precision():
    threads = torch.get_num_threads()
    peaks = matmul_peaks(threads=1, size=64, rounds=1)
    by = peaks.pop("by_library")
    assert sorted(peaks) == ["bf16", "fp32", "int8"]
    assert all(v > 0 for v in peaks.values())
    assert peaks["fp32"] == max(by["torch_fp32"], by["onnxruntime_fp32"])  # the faster library's is the peak
    assert (peaks["bf16"], peaks["int8"]) == (by["torch_bf16"], by["onnxruntime_int8"])
    assert torch.get_num_threads() == threads  # restored


def test_roofline_fields_are_consistent():
    assert roofline(0.5, 2e9, 10.0) == {"gflop_per_image": 2.0, "achieved_gflops": 4.0, "peak_share": 0.4}
    assert roofline(0.5, None, 10.0) == {"gflop_per_image": None, "achieved_gflops": None, "peak_share": None}


@pytest.mark.slow
def test_inference_benchmark_reports_the_roofline(tiny_model_dir, monkeypatch, tmp_path):
    """Every backend on the tiny model, one photo, one pass: the roofline fields and the torch-auto row."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # auto measures here, not in the user's cache
    monkeypatch.delenv(ENV_VAR, raising=False)
    report = run_inference_benchmark(model=tiny_model_dir, threads=1, repeats=1, photos=default_photos(1),
                                     peak_size=64)
    peaks = report["meta"]["peak_gflops"]
    assert sorted(report["meta"]["peak_gflops_by_library"]) == ["onnxruntime_fp32", "onnxruntime_int8",
                                                                "torch_bf16", "torch_fp32"]
    assert sorted(peaks) == ["bf16", "fp32", "int8"] and all(v > 0 for v in peaks.values())
    rows = {(r["backend"], r["prompts"]): r for r in report["results"]}
    assert sorted(rows) == sorted((b, p) for b in BACKENDS for p in PROMPT_COUNTS)
    expected = {"reference": "fp32", "torch": "fp32", "torch-bf16": "bf16", "onnx-fp32": "fp32", "onnx-int8": "int8"}
    for (backend, prompts), r in rows.items():
        assert r["gflop_per_image"] > 0 and r["achieved_gflops"] > 0 and r["peak_share"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["gflop_per_image"] / r["s_per_image"])
        assert r["peak_share"] == pytest.approx(r["achieved_gflops"] / peaks[r["peak_precision"]])
        assert r["peak_precision"] == expected.get(backend, r["peak_precision"])
    for prompts in PROMPT_COUNTS:  # the ONNX graphs share the engine's torch count; HF's forward does more
        assert rows[("onnx-int8", prompts)]["gflop_per_image"] == rows[("torch", prompts)]["gflop_per_image"]
        assert rows[("reference", prompts)]["gflop_per_image"] > rows[("torch", prompts)]["gflop_per_image"]
    auto = rows[("torch-auto", 1)]
    assert auto["peak_precision"] in ("fp32", "bf16") and auto["precision_reason"].startswith(auto["peak_precision"])
    table = format_table(report)
    assert "torch-auto" in table and "of peak" in table and "matmul peak (64^2" in table
