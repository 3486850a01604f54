"""Which torch precision runs fastest here: measured on this machine once, never guessed from CPU flags.

CPUs differ: on one this project ran on, bf16 matrix multiplies were 2.3x faster than fp32; on another with
AVX-512 BF16 but no AMX they were 2x slower. So `auto` times the model's own matmul shapes in fp32 and in bf16
(well under a second) and keeps the faster one. The decision is cached per CPU model, CPU flags, torch version
and thread count in the user's cache folder; DRYWALL_PRECISION=fp32|bf16 overrides it.

bf16 is offered only because its masks agree with fp32 (mean IoU 0.998 on the bundled model over the 165 valid
photos and both prompts; engine.onnx.export.mask_agreement measures it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.fileio import atomic_write_json

ENV_VAR = "DRYWALL_PRECISION"
CHOICES = ("fp32", "bf16")
# (tokens, in, out) of the vision tower's matmuls at 352 px: ViT-B/16 sees 22 x 22 patches + 1 class token.
SHAPES = ((485, 768, 768), (485, 768, 3072), (485, 3072, 768))
MIN_SPEEDUP = 1.05  # bf16 must be this much faster to be chosen: a tie goes to fp32, the reference


@dataclass(frozen=True)
class PrecisionChoice:
    """precision: "fp32" or "bf16"; reason: one line for the user; the measured seconds per round (or None)."""

    precision: str
    reason: str
    fp32_s: float | None = None
    bf16_s: float | None = None


def cache_file() -> Path:
    """$XDG_CACHE_HOME/drywall-qa/precision.json (default ~/.cache/...)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "drywall-qa" / "precision.json"


def machine_key(threads: int) -> str:
    """What the decision depends on: the CPU model and flags, the torch version and the thread count."""
    cpu, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{cpu} | flags {digest} | torch {torch.__version__} | {threads} threads"


def pick(fp32_s: float, bf16_s: float) -> PrecisionChoice:
    """The faster precision, fp32 unless bf16 is at least MIN_SPEEDUP faster; the reason says by how much."""
    speedup = fp32_s / bf16_s
    if speedup >= MIN_SPEEDUP:
        return PrecisionChoice("bf16", f"bf16: measured {speedup:.1f}x faster than fp32 here", fp32_s, bf16_s)
    return PrecisionChoice("fp32", f"fp32: bf16 measured {1 / speedup:.1f}x slower here" if speedup < 1 else
                           f"fp32: bf16 measured no faster here ({speedup:.2f}x)", fp32_s, bf16_s)


def measure(rounds: int = 5) -> tuple[float, float]:
    """(fp32, bf16) seconds for one round of SHAPES' matmuls, each the best of `rounds` after a warm-up.

    bf16 is timed the way the Segmenter runs it (bf16 weights, inputs cast in, outputs cast back to fp32). The
    two precisions take turns, round by round, so that load from other processes hits both alike.
    """
    gen = torch.Generator().manual_seed(0)
    mats = [(torch.randn(t, i, generator=gen), torch.randn(o, i, generator=gen)) for t, i, o in SHAPES]
    bf16_weights = [w.to(torch.bfloat16) for _, w in mats]

    def fp32_round():
        for x, w in mats:
            torch.nn.functional.linear(x, w)

    def bf16_round():
        for (x, _), w in zip(mats, bf16_weights):
            torch.nn.functional.linear(x.to(torch.bfloat16), w).float()

    best = {fp32_round: float("inf"), bf16_round: float("inf")}
    for fn in best:
        fn()  # warm-up: kernel selection, caches
    for _ in range(rounds):
        for fn in best:
            t0 = time.perf_counter()
            fn()
            best[fn] = min(best[fn], time.perf_counter() - t0)
    return best[fp32_round], best[bf16_round]


def choose_precision(threads: int | None = None, *, path: Path | None = None) -> PrecisionChoice:
    """fp32 or bf16 for torch models on this CPU: DRYWALL_PRECISION if set, else the cached measurement for this
    machine key, else a fresh measurement (then cached). Raises ValueError for a bad DRYWALL_PRECISION."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in CHOICES:
            raise ValueError(f"{ENV_VAR}={forced!r}: use one of {', '.join(CHOICES)} (or unset it to measure).")
        return PrecisionChoice(forced, f"{forced}: set by {ENV_VAR}")
    path = path or cache_file()
    key = machine_key(threads or torch.get_num_threads())
    cached = read_cache(path)
    if key in cached:
        return PrecisionChoice(**cached[key])
    choice = pick(*measure())
    try:
        atomic_write_json(path, {**cached, key: asdict(choice)})
    except OSError:  # a read-only home: measure again next time
        pass
    return choice


def resolve_precision(asked: str, device: str = "cpu", threads: int | None = None) -> PrecisionChoice:
    """What to run for `asked`: "fp32" or "bf16" as asked; "auto" the measured choice on the CPU
    (`choose_precision`), fp32 on any other device. Raises ValueError for anything else."""
    if asked in CHOICES:
        return PrecisionChoice(asked, f"{asked}: asked for")
    if asked != "auto":
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', not {asked!r}.")
    if torch.device(device).type != "cpu":
        return PrecisionChoice("fp32", "fp32: bf16 is measured on the CPU only")
    return choose_precision(threads)


def read_cache(path: Path) -> dict:
    """The cached decisions ({key: PrecisionChoice fields}), {} where the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
