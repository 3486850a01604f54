"""How long a visitor's single photo waits while another visitor's batch runs, on a public app.

Launches the app in public mode on this machine (the bundled model, real photos of the shared valid split),
then: visitor A sends `--requests` single photos to /segment one after another, alone, for the baseline;
again while visitor B's /segment_batch of `--batch` photos (8 prompts each) runs. Prints the latencies
(median, p95, max) of both, and how long the batch took, as JSON:

    python tools/public_latency.py --json latency.json

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
from engine.paths import SHARED_DATA  # noqa: E402


def _times(client, photos, handle_file) -> list[float]:
    out = []
    for photo in photos:
        t0 = time.perf_counter()
        client.predict(handle_file(str(photo)), "segment crack", "", 0.25, api_name="/segment")
        out.append(time.perf_counter() - t0)
    return out


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
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    app.set_threads()
    photos = sorted(args.data.glob("*.jpg"))
    if len(photos) < args.batch:
        raise SystemExit(f"{args.data} holds {len(photos)} photos; --batch {args.batch} needs as many.")
    work = Path(tempfile.mkdtemp(prefix="dqa-latency-"))
    demo = app.build_app(work_dir=work, default_model=str(app.STARTER_DIR), public=PublicSettings(enabled=True))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        _times(a, photos[:2], handle_file)  # warm: the model loads
        alone = _times(a, photos[: args.requests], handle_file)
        prompts = "\n".join(["segment crack", "segment taping area"] + [f"segment thing {k}" for k in range(6)])
        t0 = time.perf_counter()
        job = b.submit([handle_file(str(p)) for p in photos[: args.batch]], prompts, "", 0.25,
                       api_name="/segment_batch")
        during, k = [], 0
        while not job.done():
            during += _times(a, [photos[k % len(photos)]], handle_file)
            k += 1
        job.result()
        batch_s = time.perf_counter() - t0
    finally:
        demo.close()
    result = {"alone": _summary(alone), "during_batch": _summary(during), "batch_photos": args.batch,
              "batch_s": round(batch_s, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
