"""`python -m engine benchmark`: inference speed of every backend, side by side in one run.

    reference   CLIPSegProcessor + CLIPSegForImageSegmentation as HF's docs use them: one row per (photo, prompt),
                so 5 prompts run the whole model (12 vision layers, text tower) 5 times
    torch       the engine `Segmenter`, fp32 (vision once per photo, truncated tower, text cached per prompt)
    torch-bf16  the same in bf16
    torch-auto  the same in the precision the app runs by default ("auto": the faster of the two as measured on
                this machine by `engine.precision`; the row records which ran and why)
    onnx-fp32   `OnnxSegmenter` on an export of the same weights (`export_onnx`, made in the run)
    onnx-int8   the same export's int8 encoders

Default model: the full-size CIDAS/clipseg-rd64-refined architecture with random weights (no Hub here) and the
locally built tokenizer; --model times a local real model instead. Inputs: the same real photos (640x640) for
every backend, 352x352 model input, maps returned at photo size (every backend does the sigmoid + upsampling).

Method. Each backend runs in a fresh child process (`python -c`), so its peak RSS is its own: the child's
VmHWM at the end (see `peak_rss_mb`): Python + imports + weights + activations. torch is imported by every
backend (the ONNX backend shares the torch preprocessing and upsampling code). Per backend and prompt count:
one warm-up photo (which also fills the engine's per-prompt text cache, as in an app that keeps its prompts),
then `repeats` timed passes over the photos; s_per_image is the fastest pass's mean (the least disturbed by
other load on a shared machine; the 1-minute load average is recorded). speedup = reference s_per_image /
backend s_per_image at the same prompt count. disk_mb: the weight files a backend loads (safetensors, or the
graph files of its precision). mask_iou_vs_fp32 and max_abs_prob_diff_vs_fp32 compare the 5-prompt maps
(masks at the model threshold) with the engine's torch fp32 ones; on random weights the masks are mostly
empty, so IoU 1.0 says little there: pass --model with a trained model for a meaningful figure.

Roofline. In the same run, before the backends, the parent measures this machine's matmul peak at the backends'
thread count (`matmul_peaks`, square PEAK_SIZE matmuls): fp32 the faster of torch and onnxruntime (MatMul), bf16
with torch, int8 with onnxruntime (a MatMulInteger graph, uint8 activations x int8 weights as in the int8 export);
each the best of PEAK_ROUNDS after a warm-up; meta.peak_gflops = {fp32, bf16, int8}, every measurement in
meta.peak_gflops_by_library. gflop_per_image: matmul and convolution FLOPs of one photo at
the row's prompt count, counted with torch's FlopCounterMode on the backend's own torch forward (after the
warm-up, so the engine backends' cached text tower is not counted, as it is not timed); the ONNX backends run
the same graph as the engine's torch forward and share its count. achieved_gflops = gflop_per_image /
s_per_image; peak_share = achieved_gflops / the peak of the row's matmul precision (`peak_precision`: fp32 for
reference, torch and onnx-fp32, bf16 for torch-bf16, int8 for onnx-int8, the chosen one for torch-auto).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.images import load_image
from engine.models import (
    DEFAULT_THRESHOLD,
    full_size_config,
    load_clipseg,
    load_segmenter,
    make_random_model_folder,
    read_meta,
    resolve_source,
)
from engine.paths import REPO_ROOT, SHARED_DATA
from engine.segmenter import cpu_supports_bf16, probability_maps

# onnx, onnxruntime and transformers' processor load only where a backend needs them: each child process's
# peak RSS is part of the result, so a torch backend must not pay for importing the ONNX stack.

BACKENDS = ("reference", "torch", "torch-bf16", "torch-auto", "onnx-fp32", "onnx-int8")
# the matmul precision each backend's share of the peak is measured against (torch-auto: the one it chose)
PEAK_PRECISION = {"reference": "fp32", "torch": "fp32", "torch-bf16": "bf16", "onnx-fp32": "fp32",
                  "onnx-int8": "int8"}
PROMPTS = ("segment crack", "segment wall crack", "segment taping area", "segment joint/tape", "segment drywall seam")
PROMPT_COUNTS = (1, 5)
PHOTOS_DIR = SHARED_DATA / "cracks" / "valid" / "images"
N_PHOTOS = 4
DEFAULT_REPEATS = 2
CHILD_TIMEOUT_S = 600
PEAK_SIZE = 2048
PEAK_ROUNDS = 5


def default_photos(n: int = N_PHOTOS) -> list[Path]:
    """The first `n` photos (sorted by name) of the cracks valid split in ../shared."""
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))[:n]
    if not photos:
        raise FileNotFoundError(f"No photos in {PHOTOS_DIR}: the benchmark reads real photos from ../shared.")
    return photos


def count_flops(fn) -> float:
    """Matmul and convolution FLOPs of one call of `fn()`, counted with torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _best_seconds(fn, rounds: int) -> float:
    fn()  # warm-up: kernel selection, caches
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_matmul_gflops(dtype: torch.dtype, size: int = PEAK_SIZE, rounds: int = PEAK_ROUNDS) -> float:
    """GFLOP/s of a size x size x size torch matmul in `dtype` (2 size^3 FLOPs), the best of `rounds`."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
    return 2 * size**3 / _best_seconds(lambda: torch.matmul(a, b), rounds) / 1e9


def onnx_matmul_gflops(precision: str = "int8", size: int = PEAK_SIZE, rounds: int = PEAK_ROUNDS,
                       threads: int = 2) -> float:
    """GFLOP/s of a size^3 matmul in onnxruntime, weights an initializer as in the export: "int8" is
    MatMulInteger (uint8 activations x int8 weights, as the int8 export's dynamically quantized matmuls run),
    "fp32" is MatMul (onnxruntime's own kernels, which can beat torch's BLAS). The best of `rounds`."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if precision not in ("int8", "fp32"):
        raise ValueError(f"precision must be 'int8' or 'fp32', not {precision!r}.")
    rng = np.random.default_rng(0)
    if precision == "int8":
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    else:
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], f"{precision}_peak",
                              [helper.make_tensor_value_info("a", a_type, [size, size])],
                              [helper.make_tensor_value_info("y", y_type, [size, size])],
                              initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return 2 * size**3 / _best_seconds(lambda: session.run(None, {"a": a}), rounds) / 1e9


def matmul_peaks(threads: int = 2, size: int = PEAK_SIZE, rounds: int = PEAK_ROUNDS) -> dict[str, dict | float]:
    """This machine's matmul peak in GFLOP/s at `threads` threads: {"fp32", "bf16", "int8", "by_library"}.

    fp32 is the faster of torch's matmul and onnxruntime's MatMul (their BLAS kernels differ: on one AMD CPU
    onnxruntime's ran twice as fast as torch's), bf16 is torch's, int8 onnxruntime's MatMulInteger; by_library
    keeps every measurement."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by = {"torch_fp32": torch_matmul_gflops(torch.float32, size, rounds),
              "onnxruntime_fp32": onnx_matmul_gflops("fp32", size, rounds, threads),
              "torch_bf16": torch_matmul_gflops(torch.bfloat16, size, rounds),
              "onnxruntime_int8": onnx_matmul_gflops("int8", size, rounds, threads)}
    finally:
        torch.set_num_threads(before)
    return {"fp32": max(by["torch_fp32"], by["onnxruntime_fp32"]), "bf16": by["torch_bf16"],
            "int8": by["onnxruntime_int8"], "by_library": by}


def roofline(s_per_image: float, flops_per_image: float | None, peak_gflops: float) -> dict:
    """gflop_per_image, achieved_gflops (= gflop_per_image / s_per_image) and peak_share (= achieved / peak);
    all None when the FLOPs were not counted."""
    if flops_per_image is None:
        return {"gflop_per_image": None, "achieved_gflops": None, "peak_share": None}
    gflop = flops_per_image / 1e9
    return {"gflop_per_image": gflop, "achieved_gflops": gflop / s_per_image,
            "peak_share": gflop / s_per_image / peak_gflops}


def run_inference_benchmark(model=None, threads: int = 2, repeats: int | None = None, *, photos=None,
                            backends=BACKENDS, progress=None, peak_size: int = PEAK_SIZE) -> dict:
    """Time every backend on the same photos; returns {"results": [...], "meta": {...}} (see the module doc).

    model: a local model folder (default: random full-size weights); threads: torch and onnxruntime threads;
    repeats: timed passes over the photos (default DEFAULT_REPEATS); progress: callable(message) or None;
    peak_size: the side of the square matmuls that measure the peaks.
    """
    from engine.onnx.export import export_onnx

    say = progress or (lambda message: None)
    repeats = repeats or DEFAULT_REPEATS
    photos = [str(p) for p in (photos or default_photos())]
    start = time.perf_counter()
    load_before = os.getloadavg()
    say(f"measuring the matmul peaks ({peak_size}^2: fp32, bf16 with torch; int8 with onnxruntime)")
    peaks = matmul_peaks(threads, peak_size)
    peaks_by_library = peaks.pop("by_library")
    with tempfile.TemporaryDirectory(prefix="drywall-bench-") as tmp:
        tmp = Path(tmp)
        if model is None:
            say("building the full-size rd64-refined architecture with random weights")
            model_dir = make_random_model_folder(tmp / "model", full_size_config())
            model_label = "CIDAS/clipseg-rd64-refined architecture, random weights, local tokenizer"
        else:
            model_dir = resolve_source(model).path
            model_label = str(model)
        manifest = None
        if any(b.startswith("onnx") for b in backends):
            say("exporting to ONNX (fp32 + int8) with the parity check")
            t = time.perf_counter()
            manifest = export_onnx(str(model_dir), tmp / "export", int8=True, threads=threads)
            export_s = time.perf_counter() - t
        rows, children = [], {}
        for backend in backends:
            say(f"timing {backend}")
            spec = {"backend": backend, "model": str(model_dir), "export": str(tmp / "export"), "photos": photos,
                    "threads": threads, "repeats": repeats, "maps": str(tmp / f"{backend}.npz")}
            children[backend] = _run_child(spec)
        ref_maps = _load_maps(tmp / "torch.npz")
        # the ONNX graphs are the engine's torch forward, exported: they share its count
        engine_flops = next((children[b]["flops_per_image"] for b in ("torch", "torch-bf16", "torch-auto")
                             if b in children), None)
        for backend in backends:
            child = children[backend]
            agreement = _agreement(ref_maps, _load_maps(tmp / f"{backend}.npz"))
            flops = engine_flops if backend.startswith("onnx") else child["flops_per_image"]
            precision = child.get("precision") or PEAK_PRECISION[backend]
            for p in PROMPT_COUNTS:
                s = child["s_per_image"][str(p)]
                ref = children.get("reference", {}).get("s_per_image", {}).get(str(p))
                rows.append({"backend": backend, "prompts": p, "s_per_image": s,
                             "speedup": (ref / s) if ref else None, "peak_rss_mb": child["peak_rss_mb"],
                             "disk_mb": child["disk_mb"], **agreement, "load_s": child["load_s"],
                             "peak_precision": precision, "precision_reason": child.get("precision_reason"),
                             **roofline(s, flops[str(p)] if flops else None, peaks[precision])})
        for row in rows:  # the prompt-scaling target: 5 prompts cost at most 1.3x one prompt on engine backends
            one = next(r["s_per_image"] for r in rows if r["backend"] == row["backend"] and r["prompts"] == 1)
            row["vs_1_prompt"] = row["s_per_image"] / one
    meta = {
        "threads": threads, "repeats": repeats, "photos": [Path(p).name for p in photos], "input_size": 352,
        "prompts": list(PROMPTS), "model": model_label, "machine": machine_info(), "versions": versions(),
        "method": "fresh child process per backend; warm-up photo first; s_per_image = fastest of `repeats` "
                  "passes over the photos; peak_rss_mb = child's VmHWM (incl. Python and torch imports)",
        "peak_gflops": peaks, "peak_gflops_by_library": peaks_by_library, "peak_size": peak_size,
        "total_s": time.perf_counter() - start,
        # other work on the machine skews timings (torch's OpenMP threads suffer most): 1-min load averages
        "loadavg_start_end": [load_before[0], os.getloadavg()[0]],
    }
    if manifest is not None:
        meta["export_s"] = export_s
        meta["export_parity"] = manifest["parity"]
    return {"results": rows, "meta": meta}


def machine_info() -> dict:
    model_name = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    return {"cpu": model_name or platform.processor(), "cores": os.cpu_count(), "platform": platform.platform(),
            "bf16": cpu_supports_bf16(), "avx512_vnni": "avx512_vnni" in flags}


def versions() -> dict:
    return {"python": platform.python_version(),
            **{n: version(n) for n in ("torch", "transformers", "onnx", "onnxruntime", "numpy")}}


def format_table(report: dict) -> str:
    header = ["backend", "prompts", "s/image", "speedup", "vs 1 prompt", "peak RSS MB", "disk MB", "mask IoU vs fp32",
              "max |dp| vs fp32", "GFLOP/image", "GFLOP/s", "of peak"]
    rows = [header]
    for r in report["results"]:
        rows.append([r["backend"], str(r["prompts"]), f"{r['s_per_image']:.3f}",
                     "-" if r["speedup"] is None else f"{r['speedup']:.2f}x", f"{r['vs_1_prompt']:.2f}x",
                     f"{r['peak_rss_mb']:.0f}", f"{r['disk_mb']:.0f}",
                     "-" if r["mask_iou_vs_fp32"] is None else f"{r['mask_iou_vs_fp32']:.4f}",
                     "-" if r["max_abs_prob_diff_vs_fp32"] is None else f"{r['max_abs_prob_diff_vs_fp32']:.4f}",
                     *(["-"] * 3 if r.get("gflop_per_image") is None else
                       [f"{r['gflop_per_image']:.1f}", f"{r['achieved_gflops']:.0f}",
                        f"{r['peak_share']:.0%} {r['peak_precision']}"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    meta = report["meta"]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{meta['threads']} threads, {len(meta['photos'])} photos x {meta['repeats']} passes, "
                 f"{meta['input_size']}x{meta['input_size']}, {meta['model']}; {meta['machine']['cpu']}; "
                 f"total {meta['total_s']:.0f} s, load average {meta['loadavg_start_end'][0]:.1f} -> "
                 f"{meta['loadavg_start_end'][1]:.1f}")
    if "peak_gflops" in meta:
        peaks = meta["peak_gflops"]
        by = meta.get("peak_gflops_by_library", {})
        fp32_from = (f" (torch {by['torch_fp32']:.0f}, onnxruntime {by['onnxruntime_fp32']:.0f})"
                     if "torch_fp32" in by else "")
        lines.append(f"matmul peak ({meta['peak_size']}^2, {meta['threads']} threads, GFLOP/s): fp32 "
                     f"{peaks['fp32']:.0f}{fp32_from}, bf16 {peaks['bf16']:.0f} (torch), int8 {peaks['int8']:.0f} "
                     "(onnxruntime MatMulInteger); 'of peak' = GFLOP/s / the peak of the row's precision")
    auto = next((r for r in report["results"] if r["backend"] == "torch-auto"), None)
    if auto is not None:
        lines.append(f"torch-auto (the app's default) ran {auto['peak_precision']}: {auto['precision_reason']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# One backend, in its own process


def _run_child(spec: dict) -> dict:
    code = "import json, sys; from engine.benchmark import child_main; child_main(json.loads(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {spec['backend']} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(spec: dict) -> None:
    """Load one backend, time it on the photos, save its 5-prompt maps, print one JSON line."""
    torch.set_num_threads(spec["threads"])
    photos = [load_image(p) for p in spec["photos"]]
    t = time.perf_counter()
    predict, threshold, disk_mb, precision = _load_backend(spec)
    load_s = time.perf_counter() - t
    timings = {}
    for p in PROMPT_COUNTS:
        prompts = list(PROMPTS[:p])
        predict(photos[0], prompts)  # warm-up (and the text cache of the engine backends)
        passes = []
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            for photo in photos:
                predict(photo, prompts)
            passes.append((time.perf_counter() - t) / len(photos))
        timings[str(p)] = min(passes)
    flops = None if spec["backend"].startswith("onnx") else {  # onnxruntime's work is invisible to torch
        str(p): count_flops(lambda: predict(photos[0], list(PROMPTS[:p]))) for p in PROMPT_COUNTS}
    maps = {f"{i}|{q}": m.astype(np.float16) for i, photo in enumerate(photos)
            for q, m in predict(photo, list(PROMPTS)).items()}
    np.savez(spec["maps"], threshold=np.float32(threshold), **maps)
    peak_mb = peak_rss_mb()
    print(json.dumps({"backend": spec["backend"], "s_per_image": timings, "peak_rss_mb": peak_mb,
                      "disk_mb": disk_mb, "load_s": load_s, "flops_per_image": flops, **precision}))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    VmHWM from /proc/self/status: it belongs to the process image, so an exec'd child starts from zero.
    (`ru_maxrss` is not usable here: Linux carries it across exec, so a child reports at least the RSS of the
    parent it was forked from.) Falls back to ru_maxrss off Linux.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_backend(spec: dict):
    """(predict(photo, prompts) -> {prompt: map}, threshold, disk MB of what it loads, {"precision",
    "precision_reason"} or {} where the backend's name says it) for one backend."""
    backend, threads = spec["backend"], spec["threads"]
    model_dir = Path(spec["model"])
    weights_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
    if backend == "reference":
        return (*_reference(model_dir), weights_mb, {})
    if backend in ("torch", "torch-bf16", "torch-auto"):
        seg = load_segmenter(model_dir, threads=threads, precision={"torch": "fp32", "torch-bf16": "bf16"}.get(
            backend, "auto"))
        chosen = {"precision": seg.precision, "precision_reason": seg.precision_reason}
        return seg.predict, seg.threshold, weights_mb, chosen if backend == "torch-auto" else {}
    seg = load_segmenter(spec["export"], threads=threads, precision=backend.removeprefix("onnx-"))
    graphs = seg.manifest["graphs"][seg.precision].values()
    return seg.predict, seg.threshold, sum((seg.folder / g).stat().st_size for g in graphs) / 2**20, {}


def _reference(model_dir: Path):
    """HF's own pipeline: CLIPSegProcessor, then one forward with one row per (photo, prompt)."""
    from transformers import CLIPSegProcessor

    model, tokenizer, image_processor = load_clipseg(model_dir)
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)

    def predict(photo, prompts):
        inputs = processor(text=prompts, images=[photo] * len(prompts), padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**inputs).logits.reshape(len(prompts), *inputs["pixel_values"].shape[-2:])
        return probability_maps(logits, prompts, photo.size)

    return predict, float(read_meta(model_dir).get("threshold", DEFAULT_THRESHOLD))


def _load_maps(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _agreement(ref: dict | None, other: dict | None) -> dict:
    """mask_iou_vs_fp32 (mean over photo x prompt, at the model threshold) and max_abs_prob_diff_vs_fp32."""
    from engine.onnx.export import mask_iou

    if ref is None or other is None:
        return {"mask_iou_vs_fp32": None, "max_abs_prob_diff_vs_fp32": None}
    t = float(ref["threshold"])
    keys = [k for k in ref if k != "threshold"]
    ious = [mask_iou(ref[k] >= t, other[k] >= t) for k in keys]
    diff = max(float(np.abs(ref[k].astype(np.float32) - other[k]).max()) for k in keys)
    return {"mask_iou_vs_fp32": float(np.mean(ious)), "max_abs_prob_diff_vs_fp32": diff}
