"""How close the model's crack figures come to the labelled ones, photo by photo.

For each photo of a labelled crack set, the total crack length and the widest crack measured on the model's mask
(`engine.measure`, the model's own thresholds) against the same measured on the ground-truth mask. The photos
carry no scale, so lengths and widths are compared in pixels, and the width band under an assumed scale
(`--mm-per-px`, default 0.5: a 640 px photo of a 32 cm patch of wall). Prints the medians as a table and, with
--min-area-sweep, the mean regions per photo and the length error at several speckle thresholds (how
DEFAULT_MIN_AREA was chosen); --json writes the same figures:

    python tools/measure_accuracy.py --data ../shared/data/drywall-qa/cracks/valid --json measure-accuracy.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import open_dataset  # noqa: E402
from engine.measure import DEFAULT_MIN_AREA, band_for, measure_mask  # noqa: E402
from engine.paths import SHARED_DATA, STARTER_DIR  # noqa: E402


def _figures(mask, mm_per_px: float, min_area: int) -> dict:
    m = measure_mask(mask, kind="line", min_area=min_area)
    widest = m.widest.max_width if m.widest else 0.0
    return {"count": m.count, "length": m.total_length, "width": widest,
            "band": band_for(widest * mm_per_px) if m.count else "none"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "cracks" / "valid")
    parser.add_argument("--model", default=str(STARTER_DIR))
    parser.add_argument("--prompt", default="segment crack")
    parser.add_argument("--mm-per-px", type=float, default=0.5, help="the scale assumed for the width bands")
    parser.add_argument("--min-area-sweep", action="store_true", help="also count regions at several min areas")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from engine.models import load_segmenter

    data = open_dataset(args.data, prompts=(args.prompt,))
    segmenter = load_segmenter(args.model, precision="fp32")
    sweep = (0, 10, 20, 50, 100, 200, 400) if args.min_area_sweep else ()
    counts = {a: {"model": [], "truth": [], "length_error": []} for a in sweep}
    pairs = []
    for i in range(len(data)):
        image, truth = data[i]
        pred = segmenter.prediction(image, [args.prompt])
        mask = pred.mask(args.prompt)
        if not truth.any():
            continue
        got, want = _figures(mask, args.mm_per_px, DEFAULT_MIN_AREA), _figures(truth, args.mm_per_px, 0)
        pairs.append((got, want))
        for a in sweep:  # the model's speckle threshold against the labelled masks as they are
            model_a = measure_mask(mask, min_area=a)
            counts[a]["model"].append(model_a.count)
            counts[a]["truth"].append(want["count"])
            counts[a]["length_error"].append(abs(model_a.total_length - want["length"]) / want["length"])
    found = [(g, w) for g, w in pairs if g["count"]]
    result = {
        "data": str(args.data.name if args.data.name != "valid" else f"{args.data.parent.name}/valid"),
        "model": Path(args.model).name, "photos": len(pairs), "photos_found": len(found),
        "median_length_relative_error": round(statistics.median(abs(g["length"] - w["length"]) / w["length"]
                                                                for g, w in pairs), 3),
        "median_length_ratio": round(statistics.median(g["length"] / w["length"] for g, w in pairs), 3),
        "median_width_abs_error_px": round(statistics.median(abs(g["width"] - w["width"]) for g, w in found), 2),
        "median_width_ratio": round(statistics.median(g["width"] / w["width"] for g, w in found), 3),
        "band_agreement": round(sum(g["band"] == w["band"] for g, w in pairs) / len(pairs), 3),
        "median_length_px": {"model": round(statistics.median(g["length"] for g, _ in pairs), 1),
                             "labels": round(statistics.median(w["length"] for _, w in pairs), 1)},
        "median_width_px": {"model": round(statistics.median(g["width"] for g, _ in found), 1),
                            "labels": round(statistics.median(w["width"] for _, w in found), 1)},
        "assumed_mm_per_px": args.mm_per_px, "min_area": DEFAULT_MIN_AREA,
        "min_area_sweep": {str(a): {"model_regions": round(statistics.mean(c["model"]), 2),
                                    "truth_regions": round(statistics.mean(c["truth"]), 2),
                                    "median_length_relative_error": round(statistics.median(c["length_error"]), 3)}
                           for a, c in counts.items()},
    }
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


def format_table(result: dict) -> str:
    """The figures as the Markdown tables of docs/measurements.md."""
    lines = [f"{result['model']} on {result['data']} (lengths and widths in photo pixels; min area "
             f"{result['min_area']} px)", "", "| measure | result |", "|---|---|",
             f"| photos (the model finds a crack in) | {result['photos']} ({result['photos_found']}) |",
             f"| total length: median relative error | {100 * result['median_length_relative_error']:.1f}% "
             f"(median ratio model / labels {result['median_length_ratio']:.2f}; medians "
             f"{result['median_length_px']['model']:.0f} / {result['median_length_px']['labels']:.0f} px) |",
             f"| widest crack: median absolute error | {result['median_width_abs_error_px']:.1f} px (median ratio "
             f"{result['median_width_ratio']:.2f}; medians {result['median_width_px']['model']:.1f} / "
             f"{result['median_width_px']['labels']:.1f} px) |",
             f"| width band agrees (at an assumed {result['assumed_mm_per_px']:g} mm per pixel) | "
             f"{100 * result['band_agreement']:.0f}% of photos |"]
    sweep = result["min_area_sweep"]
    if sweep:
        lines += ["", "| speckle threshold (px) | " + " | ".join(sweep) + " |", "|---" * (len(sweep) + 1) + "|",
                  f"| regions per photo (labels: {next(iter(sweep.values()))['truth_regions']:.1f}) | "
                  + " | ".join(f"{c['model_regions']:.1f}" for c in sweep.values()) + " |",
                  "| total length, median relative error | "
                  + " | ".join(f"{100 * c['median_length_relative_error']:.1f}%" for c in sweep.values()) + " |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
