"""How long a visitor's single photo waits while another visitor's batch runs, on a public app.

Launches the app in public mode on this machine (the bundled model, real photos of the shared valid split),
then: visitor A sends `--requests` single photos to /segment one after another, alone, for the baseline;
again while visitor B's /segment_batch of `--batch` photos (8 prompts each) runs. Prints the latencies
(median, p95, max) of both, and how long the batch took, as JSON:

    python tools/public_latency.py --json latency.json                      # a batch of real photos
    python tools/public_latency.py --tiff-side 12000 --json latency.json    # 20 float32 TIFFs of 12000 px

Timings vary from run to run on a shared machine: compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: E402
from engine.app.public import PublicSettings  # noqa: E402
from engine.paths import SHARED_DATA, STARTER_DIR  # noqa: E402


def _times(client, photos, handle_file) -> list[float]:
    out = []
    for photo in photos:
        t0 = time.perf_counter()
        client.predict(handle_file(str(photo)), "segment crack", "", 0.25, api_name="/segment")
        out.append(time.perf_counter() - t0)
    return out


def _float_tiff(path: Path, side: int) -> Path:
    """A side x side float32 TIFF of cracks-like stripes that deflates to about 1 MB."""
    import numpy as np
    from PIL import Image

    values = np.full((side, side), 0.8, np.float32)
    for i in range(0, side, max(1, side // 8)):
        values[:, i:i + 30] = 0.15
    Image.fromarray(values, "F").save(path, compression="tiff_deflate")
    return path


def _summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median_s": round(statistics.median(ordered), 3), "p95_s": round(p95, 3),
            "max_s": round(ordered[-1], 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "cracks" / "valid" / "images")
    parser.add_argument("--batch", type=int, default=20, help="photos in visitor B's batch (default 20)")
    parser.add_argument("--requests", type=int, default=20, help="single photos visitor A sends (default 20)")
    parser.add_argument("--tiff-side", type=int, default=0,
                        help="make the batch of float32 TIFFs of this side (about 1 MB each on the wire) instead of "
                             "real photos: the costliest photos a visitor can send")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    app.set_threads()
    photos = sorted(args.data.glob("*.jpg"))
    if len(photos) < args.batch:
        raise SystemExit(f"{args.data} holds {len(photos)} photos; --batch {args.batch} needs as many.")
    work = Path(tempfile.mkdtemp(prefix="dqa-latency-"))
    demo = app.build_app(work_dir=work, default_model=str(STARTER_DIR), public=PublicSettings(enabled=True))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        _times(a, photos[:2], handle_file)  # warm: the model loads
        alone = _times(a, photos[: args.requests], handle_file)
        prompts = "\n".join(["segment crack", "segment taping area"] + [f"segment thing {k}" for k in range(6)])
        t0 = time.perf_counter()
        batch = [str(p) for p in photos[: args.batch]]
        if args.tiff_side:
            batch = [str(_float_tiff(work / "huge.tif", args.tiff_side))] * args.batch
        job = b.submit([handle_file(p) for p in batch], prompts, "", 0.25, api_name="/segment_batch")
        during, k = [], 0
        while not job.done():
            during += _times(a, [photos[k % len(photos)]], handle_file)
            k += 1
        job.result()
        batch_s = time.perf_counter() - t0
    finally:
        demo.close()
    result = {"alone": _summary(alone), "during_batch": _summary(during), "batch_photos": args.batch,
              "batch_kind": f"float32 TIFF {args.tiff_side} px" if args.tiff_side else "real photos",
              "batch_s": round(batch_s, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
