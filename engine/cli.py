"""`python -m engine`: the command line over the engine's functions.

Each command is a thin function: parse, one engine call, print. Errors the user can fix are printed as one
line (no traceback) with exit status 1; set DRYWALL_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from engine.data import open_dataset
from engine.distributed import (
    MERGE_TIMEOUT_S,
    clear_stale_part,
    local_world,
    merge_parts,
    rank_and_world,
    remove_parts,
    shard,
    write_part,
)
from engine.evaluate import evaluate_sets
from engine.fileio import atomic_write_json, atomic_write_text
from engine.images import ImageError, list_images
from engine.paths import in_repo
from engine.prediction import PREDICTIONS_CSV, predict_chunks, unique_images, write_prediction, write_predictions_csv
from engine.prompts import parse_data_arg
from engine.report import report_photo, write_report
from engine.train import PRESETS, DataSpec, TrainConfig, make_config
from engine.train.progress import TrainProgress

# torch, transformers, onnxruntime and the modules built on them (models, training loop, model card, export,
# benchmarks) load inside the command that needs them, so `--help` and a mistyped argument answer at once.

DESCRIPTION = """Drywall QA: text-prompted segmentation of wall photos with CLIPSeg.

MODEL (everywhere) is one of: the bundled model (checkpoints/drywall-starter, trained on walls: the default
of predict, evaluate and export), auto (the Hub model if cached or reachable, else the bundled model: where
training starts), a Hub id (CIDAS/clipseg-rd64-refined: zero-shot CLIPSeg), a Hugging Face model folder, a
training run under checkpoints/, or an ONNX export under export/.
"""

EPILOG = """examples:
  python -m engine predict --images photo.jpg --prompt "segment crack" --out masks/
  python -m engine evaluate --data ../shared/data/drywall-qa/cracks/valid --prompt "segment crack" \
      --json out.json
  python -m engine train --preset starter
  python -m engine export --model checkpoints/drywall-starter --out export/starter --int8
  python -m engine push --run checkpoints/my-run --repo your-name/drywall-cracks --private
  python -m engine benchmark --json bench.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_predict, _add_evaluate, _add_calibrate, _add_train, _add_export, _add_push, _add_benchmark,
                _add_measure):
        add(sub)
    return parser


# The model that answers when none is named: the bundled model, trained on walls (`auto` would be zero-shot
# CLIPSeg where the Hub is reachable; it is training's starting point, not the best model for segmenting walls).
BUNDLED = "checkpoints/drywall-starter"
MODEL_HELP = ("model source (default: the bundled model, trained on walls; 'CIDAS/clipseg-rd64-refined' for zero-shot "
              "CLIPSeg, 'auto' for the Hub model when reachable, a run, a folder or an export)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment photos for one or more prompts and write mask PNGs",
                       description="Segment photos and write one mask PNG per (photo, prompt), named "
                                   "{image_id}__{prompt_slug}.png, values 0/255, at the photo's displayed size.")
    p.add_argument("--model", default=BUNDLED, help=MODEL_HELP)
    p.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders of images")
    p.add_argument("--prompt", action="append", required=True, help="what to find; repeat for several prompts")
    p.add_argument("--out", required=True, help="output folder for the mask PNGs")
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model's own)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=4, help="photos per forward pass (default: 4)")
    p.add_argument("--mm-per-px", type=float, default=None,
                   help="the photos' scale: lengths, widths and areas in mm and crack width bands (default: pixels)")
    p.add_argument("--report", default=None, metavar="HTML",
                   help="also write an HTML report (one row per photo, an overlay thumbnail per prompt, totals "
                        "per prompt; self-contained, opens offline), e.g. --report report.html")
    p.add_argument("--merge-timeout", type=float, default=MERGE_TIMEOUT_S, metavar="SECONDS",
                   help="under accelerate launch / torchrun: how long rank 0 waits for the other processes' "
                        f"part files before it merges them (default: {MERGE_TIMEOUT_S:g})")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="per-prompt IoU, Dice, precision, recall on a labelled set",
                       description="Evaluate a model on a labelled set (YOLOv8 export or split folder, COCO JSON, "
                                   "or images/ + masks/) and print a table; --json writes the same numbers.")
    p.add_argument("--model", default=BUNDLED, help=MODEL_HELP)
    p.add_argument("--data", action="append", required=True, metavar="PATH[=PROMPTS]",
                   help="labelled set: a split folder, a YOLOv8 root with --split, a COCO json, ...; repeat as "
                        'PATH="prompt a,prompt b" for several sets: each prompt is then also run on the other '
                        "sets' photos as an absent concept (false alarms, presence AUROC)")
    p.add_argument("--split", default=None, help="split of a YOLOv8 export root (train, valid, test)")
    p.add_argument("--prompt", action="append", default=[], help="prompt to evaluate (with one plain --data PATH); "
                                                                 "repeat for several")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--threshold", type=float, default=None,
                   help="one threshold for every prompt (default: each prompt's calibrated one, else the model's)")
    p.add_argument("--k-worst", type=int, default=5, help="how many worst images to list (default: 5)")
    p.add_argument("--skip-bad", action="store_true", help="skip images with bad labels (with a warning)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16", "int8"],
                   help="fp32 (default: the same scores on every CPU), auto, bf16 (torch), int8 (exports made "
                        "with --int8)")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="set a model's per-prompt thresholds on train photos, absent concepts counted",
                       description="Pick each prompt's pixel and presence threshold on the sets' train photos, "
                                   "counting the other sets' photos as absent concepts (an empty mask there scores "
                                   "IoU 1), and rewrite the model folder's drywall_qa.json (atomically).")
    p.add_argument("--model", required=True, help="a model folder or a training run (its best/, else last/)")
    p.add_argument("--data", action="append", required=True, metavar="PATH=PROMPTS",
                   help="a set and its prompts, e.g. "
                        '../shared/data/drywall-qa/cracks="segment crack,segment wall crack"')
    p.add_argument("--split", default="train", help="split of each set to calibrate on (default: train)")
    p.add_argument("--holdout-share", type=float, default=0.0,
                   help="calibrate on the photos that training with this holdout_share kept unseen, e.g. 0.1")
    p.add_argument("--images", type=int, default=100, help="photos per set (the first N; default: 100)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune (or train from scratch) on labelled sets",
                       description="Train a CLIPSeg model. Each --data is PATH=prompt1,prompt2 (synonyms).")
    p.add_argument("--data", action="append", default=[], metavar="PATH=PROMPTS",
                   help="a labelled set and its prompts, e.g. "
                        '../shared/data/drywall-qa/cracks="segment crack,segment wall crack"')
    p.add_argument("--model", default=None, help="model to start from (default: the preset's, else auto)")
    p.add_argument("--preset", default=None, help="named settings, e.g. starter, quick, full; teach: fine-tune "
                                                  "--model (default: the bundled model) on label sets from the app")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--out", default=None, help="run folder, e.g. checkpoints/my-run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, e.g. --set patience=3 --set amp=false")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32, or int8 with --int8)",
                       description="Export the text encoder, vision encoder and decoder to ONNX, check parity "
                                   "against torch in onnxruntime, and write manifest.json.")
    p.add_argument("--model", default=BUNDLED, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder, e.g. export/starter")
    p.add_argument("--int8", action="store_true", help="also quantize the encoders to int8 (dynamic)")


def _add_push(sub) -> None:
    p = sub.add_parser("push", help="push a training run to the Hugging Face Hub as a model repo with its card",
                       description="Upload a run's best model as a Hugging Face folder (weights, tokenizer, "
                                   "drywall_qa.json, a model card with model-index metrics, metrics.jsonl, "
                                   "training_config.json) to a model repo, created if needed. Uses the token "
                                   "saved by `hf auth login` (or HF_TOKEN).")
    p.add_argument("--run", required=True, help="a training run, e.g. checkpoints/my-run (or a model folder)")
    p.add_argument("--repo", required=True, help="the Hub repo id, e.g. your-name/drywall-cracks")
    p.add_argument("--private", action="store_true", help="create the repo private (default: public)")


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="measure inference (or --train: training) speed side by side",
                       description="Side-by-side timings in one run on the full-size rd64-refined architecture "
                                   "with random weights (unless --model gives local real weights), 352x352, 2 threads.")
    p.add_argument("--train", action="store_true", help="benchmark training: plain forward vs the feature cache")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--model", default=None, help="a local model folder to time instead of random weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (default: the benchmark's own)")


def _add_measure(sub) -> None:
    p = sub.add_parser("measure", help="count, length, width and area of the regions of mask PNGs",
                       description="Measure every mask PNG in a folder (0/255, from this app or any tool): for a "
                                   "crack-like prompt each region's length, widest and mean width, branches and "
                                   "width band; for an area-like one its area and long side. A mask named "
                                   "{photo}__{prompt}.png says its prompt; --kind decides for the others.")
    p.add_argument("--masks", required=True, help="a folder of mask PNGs (or one PNG)")
    p.add_argument("--mm-per-px", type=float, default=None, help="the photos' scale; without it, pixels")
    p.add_argument("--kind", "--prompt-kind", dest="kind", choices=["auto", "line", "crack", "area"], default="auto",
                   help="line (or crack: cracks) or area (taping); auto: from the prompt in the file name, else line")
    p.add_argument("--min-area", type=int, default=None, help="regions under this many pixels are speckle "
                                                                 "(default: engine.measure.DEFAULT_MIN_AREA)")
    p.add_argument("--out", default=None, help="write the CSV here (default: print it)")


def cmd_measure(args) -> int:
    from engine.measure import DEFAULT_MIN_AREA, MEASURE_HEADER, is_line_prompt, measure_prompt, region_rows

    folder = Path(args.masks)
    files = [folder] if folder.is_file() else sorted(folder.glob("*.png"))
    if not files:
        raise ValueError(f"{folder} holds no mask PNG; point --masks at the folder the masks were written to.")
    rows, n_regions = [], 0
    for path in files:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L")) > 0
        prompt = path.stem.split("__", 1)[1].replace("_", " ") if "__" in path.stem else ""
        if args.kind == "auto":
            kind = "line" if not prompt or is_line_prompt(prompt) else "area"
        else:
            kind = "line" if args.kind == "crack" else args.kind
        measured = measure_prompt(mask, prompt, kind=kind, mm_per_px=args.mm_per_px,
                                  min_area=DEFAULT_MIN_AREA if args.min_area is None else args.min_area)
        n_regions += measured.count
        rows += list(region_rows(path.name, measured))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MEASURE_HEADER)
    writer.writerows(rows)
    if args.out:
        atomic_write_text(args.out, buffer.getvalue())
        print(f"wrote {n_regions} regions in {len(files)} masks to {args.out}")
    else:
        print(buffer.getvalue(), end="")
    return 0


def cmd_predict(args) -> int:
    # Arguments are checked before the model loads, so a typo fails in a second, not after the load.
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold:g} is outside [0, 1]; pass a probability such as 0.5 "
                         "(not a percentage).")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    paths = unique_images(list_images(args.images))
    if not paths:
        raise ValueError(f"No images found in {' '.join(args.images)} (looked for .jpg, .png, .webp, .bmp, .tif).")
    # Under accelerate launch / torchrun each process predicts its shard; rank 0 then merges (engine.distributed).
    rank, world = rank_and_world()
    out = Path(args.out)
    if world > 1:
        clear_stale_part(out, rank)
        if args.threads is None:  # the processes on one machine share its cores
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world()))
    from engine.models import load_segmenter

    segmenter = load_segmenter(args.model, threads=args.threads)
    if rank == 0:
        warn_unknown_prompts(segmenter, args.prompt)
    segmenter.check_prompts(args.prompt)
    names = photo_names(paths)  # over every process's photos, so each names a photo alike
    rows, entries, failed = _predict_paths(segmenter, shard(paths, rank, world), names, args, out,
                                           "predict" if world == 1 else f"predict rank {rank}/{world}")
    if world > 1:
        write_part(out, rank, rows, entries if args.report else None)
        if rank != 0:
            return 1 if failed else 0
        rows, entries = merge_parts(out, world, [names[p] for p in paths], timeout=args.merge_timeout,
                                    report=bool(args.report))
        failed = len(paths) - len({row[0] for row in rows})
    if rows:
        write_predictions_csv(rows, out / PREDICTIONS_CSV)
    if args.report and entries:
        print(f"wrote {write_report(entries, args.report, model=segmenter.name, threshold=_threshold_text(args))}")
    if world > 1:
        remove_parts(out, world)
    print(f"wrote {len(paths) - failed} x {len(args.prompt)} masks and {PREDICTIONS_CSV} to {out} "
          f"(threshold {_threshold_text(args)}, model {segmenter.name}"
          + (f", {world} processes)" if world > 1 else ")"))
    if failed:
        print(f"{failed} of {len(paths)} images could not be read (see above)", file=sys.stderr)
    return 1 if failed else 0


def _predict_paths(segmenter, paths: list[Path], names: dict[Path, str], args, out: Path,
                   desc: str) -> tuple[list[list], list, int]:
    """Predict `paths` in --batch-size chunks, writing each photo's masks: (CSV rows, report rows, failures).
    names: what each photo is called in the CSV and report (`photo_names`)."""
    failed, rows, entries = 0, [], []
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for start in range(0, len(paths), args.batch_size):
            for path, pred in predict_chunks(segmenter, paths[start:start + args.batch_size], args.prompt,
                                             args.threshold):
                if isinstance(pred, ImageError):
                    failed += 1
                    tqdm.write(f"error: {pred}", file=sys.stderr)
                else:
                    photo_rows = write_prediction(pred, path.stem, names[path], out, meta=segmenter.meta,
                                                  mm_per_px=args.mm_per_px)
                    rows += photo_rows
                    if args.report:
                        entries.append(report_photo(pred, path, names[path], photo_rows))
                bar.update(1)
    return rows, entries, failed


def photo_names(paths: list[Path]) -> dict[Path, str]:
    """The name each photo goes by in the CSV and the report: its path below the folder all the photos share
    ("images/wall_01.jpg"; one photo: its file name), never an absolute path, as the app's batch CSV does."""
    if not paths:
        return {}
    common = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
    return {p: Path(p).resolve().relative_to(common).as_posix() for p in paths}


def _threshold_text(args) -> str:
    return "each prompt's own" if args.threshold is None else f"{args.threshold:.2f}"


def cmd_evaluate(args) -> int:
    from engine.models import load_segmenter

    specs = eval_specs(args.data, args.prompt)  # checked before the model loads
    sets = [(open_dataset(path, split=args.split, prompts=prompts, skip_bad=args.skip_bad,
                          name=set_name(path) if len(specs) > 1 else None), list(prompts)) for path, prompts in specs]
    segmenter = load_segmenter(args.model, threads=args.threads, precision=args.precision)
    warn_unknown_prompts(segmenter, [p for _, prompts in specs for p in prompts])
    report = evaluate_sets(segmenter, sets, threshold=args.threshold, k_worst=args.k_worst)
    print(f"model {segmenter.name} on " + ", ".join(f"{ds.name} ({len(ds)} images)" for ds, _ in sets))
    print(report.format_table())
    if args.json:
        atomic_write_json(args.json, {"model": segmenter.name, **report.to_dict()})
        print(f"wrote {args.json}")
    return 0


def eval_specs(data: list[str], prompts: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """--data items (and --prompt for the one-set form) -> [(path, prompts)], checked."""
    specs = [parse_data_arg(str(d)) for d in data]
    if len(specs) == 1 and not specs[0][1]:
        if not prompts:
            raise ValueError("No prompt: add --prompt \"segment crack\", or write --data PATH=\"segment crack\".")
        return [(specs[0][0], tuple(prompts))]
    if prompts:
        raise ValueError("--prompt goes with one plain --data PATH; with PATH=prompts (or several sets) name the "
                         "prompts after '=' instead.")
    missing = [path for path, p in specs if not p]
    if missing:
        raise ValueError(f"With several sets each --data needs its prompts: write {missing[0]}=\"segment crack\".")
    return specs


def set_name(path: str) -> str:
    """A set's name in reports: its folder and the one above ("cracks/valid"), so two splits named valid differ."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def warn_unknown_prompts(segmenter, prompts) -> None:
    """On stderr: the prompts outside a model's trained list ("this model was trained on: ...")."""
    message = segmenter.prompt_warning(prompts) if hasattr(segmenter, "prompt_warning") else None
    if message:
        print(f"warning: {message}", file=sys.stderr)


def cmd_calibrate(args) -> int:
    """`python -m engine calibrate --model FOLDER_OR_RUN --data PATH=PROMPTS ... [--images N]`."""
    specs = [parse_data_arg(str(d)) for d in args.data]
    missing = [path for path, prompts in specs if not prompts]
    if missing:
        raise ValueError(f"Each --data needs its prompts: write {missing[0]}=\"segment crack\".")
    from engine.calibrate import calibrate_model, write_thresholds
    from engine.models import load_segmenter, resolve_source

    source = resolve_source(args.model)
    if source.kind not in ("folder", "run"):
        raise ValueError(f"Model {args.model!r} is a {source.kind} model; calibrate a local model folder or a run "
                         "(an ONNX export keeps the thresholds of the model it was exported from).")
    if args.holdout_share:  # the photos a run with this holdout_share kept out of training, opened as it opens them
        from engine.train.sampling import open_sets

        held = open_sets(make_config(None, data=[DataSpec(path, tuple(prompts)) for path, prompts in specs],
                                     holdout_share=args.holdout_share))
        sets = [(s.holdout, list(s.prompts)) for s in held]
        where = f"{args.holdout_share:.0%} of the train splits held out of training"
    else:
        sets = [(open_dataset(path, split=args.split, prompts=prompts, name=set_name(path)), list(prompts))
                for path, prompts in specs]
        where = f"{args.split} splits"
    segmenter = load_segmenter(source, threads=args.threads, precision="fp32")
    calibration = calibrate_model(segmenter, sets, args.images, progress=True)
    for p, c in calibration.items():
        print(f"{p}: threshold {c.threshold:.2f}, presence {c.presence_threshold:.3f} "
              f"(score {c.score:.3f} over {c.n_own} own + {c.n_absent} absent photos)")
    path = write_thresholds(source.path, calibration, source=f"{where}, first {args.images} photos per set")
    print(f"wrote {path}")
    return 0


def cmd_train(args) -> int:
    """`python -m engine train [--preset P] [--data PATH=PROMPTS ...] [--set KEY=VALUE ...] [--resume]`."""
    data = [DataSpec(*parse_data_arg(d)) for d in args.data] or None
    for spec in data or []:  # a dataset repo on the Hub is fetched first (offline: fails in seconds)
        if spec.path.startswith("hf://datasets/"):
            from engine.data.archive import as_data_path

            spec.path = str(as_data_path(spec.path, in_repo(".cache/datasets")))
    named = dict(data=data, model=args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 image_size=args.image_size, out=args.out)
    sets = _parse_set(args.set)
    both = sorted(k for k in sets if named.get(k) is not None)
    if both:
        raise ValueError(f"{', '.join(both)} given both as an option and with --set; give each once.")
    overrides = {**named, **sets}
    if args.preset == "teach":  # the label sets given, replaying the shared sets, from the model given
        from engine.train.teach import teach_config

        if not data or any(d.prompts for d in data):
            raise ValueError("--preset teach takes label sets made in the app (folders with labelset.json, or "
                             "their unzipped download) as --data PATH, without prompts: each has its own.")
        overrides.pop("data")
        model, out = overrides.pop("model") or BUNDLED, overrides.pop("out") or \
            f"checkpoints/teach-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = teach_config([d.path for d in data], model=model, out=out,
                           **{k: v for k, v in overrides.items() if v is not None})
    else:
        cfg = make_config(args.preset, **overrides)
    if args.preset == "starter" and cfg.model == PRESETS["starter"]["model"] and not in_repo(cfg.model).is_dir():
        raise ValueError(f"The starter preset fine-tunes {cfg.model}, which is missing: train it first with "
                         "`python -m engine train --preset starter-base` (about 46 min on 2 cores).")
    import torch

    from engine.modelcard import write_card
    from engine.train.loop import train

    if cfg.threads:  # --set threads=N; main() set all cores otherwise
        torch.set_num_threads(cfg.threads)
    with TrainProgress(cfg.epochs) as progress:
        summary = train(cfg, progress, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under data parallelism the first process reports
        if summary.get("best_epoch"):
            print(f"model card: {write_card(in_repo(summary['run_dir']), threads=cfg.threads)}")
        print(f"{'finished' if summary.get('finished') else 'stopped'}: best epoch {summary.get('best_epoch')} "
              f"(score {summary.get('best_score', 0):.3f}), run folder {summary.get('run_dir')}")
    return 0


def _parse_set(items: list[str]) -> dict:
    """--set KEY=VALUE items -> {field: value}: VALUE as JSON where it parses (3, false, [1, 2]), else text."""
    out = {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ValueError(f"--set {item}: unknown setting {key!r}; valid ones: {', '.join(sorted(names))}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_export(args) -> int:
    """`python -m engine export --model MODEL --out export/NAME [--int8]`: export, then print the parity report."""
    # onnx, onnxruntime and the exporter load only for this command (a heavy optional dependency).
    from engine.onnx.export import export_onnx, format_report

    with tqdm(total=100, desc="export", unit="%", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(int(fraction * 100) - bar.n)

        manifest = export_onnx(args.model, args.out, int8=args.int8, progress=progress)
    print(format_report(manifest, args.out))
    return 0


def cmd_push(args) -> int:
    """`python -m engine push --run checkpoints/NAME --repo user/name [--private]`."""
    from engine.hub import push_run

    result = push_run(args.run, args.repo, private=args.private)
    print(f"pushed {len(result.files)} files to {result.url} ({'private' if result.private else 'public'})")
    return 0


def cmd_benchmark(args) -> int:
    """`python -m engine benchmark [--train] [--json FILE] [--model M] [--threads N] [--repeats R]`."""
    from engine.benchmark import format_table, run_inference_benchmark
    from engine.benchmark_train import benchmark_train

    if args.train:
        report = benchmark_train(threads=args.threads, repeats=args.repeats)
        print(json.dumps(report, indent=2))
    else:
        report = run_inference_benchmark(model=args.model, threads=args.threads, repeats=args.repeats,
                                         progress=lambda message: print(message, file=sys.stderr, flush=True))
        print(format_table(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


COMMANDS = {"predict": cmd_predict, "evaluate": cmd_evaluate, "calibrate": cmd_calibrate, "train": cmd_train,
            "export": cmd_export, "push": cmd_push, "benchmark": cmd_benchmark, "measure": cmd_measure}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    # Process-wide settings, set once here and never by the engine's constructors: torch's CPU threads
    # (--threads where the command has it, else all cores) and no weight-loading bars (ours show the real work).
    torch.set_num_threads(getattr(args, "threads", None) or os.cpu_count() or 1)
    hf_logging.disable_progress_bar()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        if os.environ.get("DRYWALL_DEBUG"):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
