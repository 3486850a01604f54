"""`python -m engine predict` over several processes (`accelerate launch`, `torchrun`): rank, shard, merge.

Inference needs no process group. Each process reads its rank from the launcher's environment (RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE), predicts its own shard of the photos (`paths[rank::world]`: disjoint, together
every photo once), writes its masks and then its part files into the output folder, each atomically:
`report.rank{r}.json` (with --report) first, `predictions.rank{r}.csv` last, so a part CSV on disk means that
rank is done. Rank 0 then waits for every part CSV (a file barrier, polled, with a timeout and a clear error),
merges them into the one predictions.csv in the original photo order (and the one report), and removes the
parts. A file barrier works the same on one machine and on several sharing the output folder, and with
torchrun or accelerate alike. Pure: no torch, no gradio.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from engine.fileio import atomic_write_json
from engine.prediction import CSV_HEADER, write_predictions_csv
from engine.report import ReportPhoto

__all__ = ["PART_CSV", "PART_REPORT", "MERGE_TIMEOUT_S", "rank_and_world", "local_world", "shard", "part_paths",
           "clear_stale_part", "write_part", "wait_for_parts", "merge_parts", "remove_parts"]

PART_CSV = "predictions.rank{rank}.csv"
PART_REPORT = "report.rank{rank}.json"
MERGE_TIMEOUT_S = 3600.0  # rank 0's wait for the others after its own shard (shards differ by a few photos)


def rank_and_world(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) from RANK / WORLD_SIZE as accelerate launch and torchrun set them; (0, 1) alone."""
    env = os.environ if environ is None else environ
    try:
        rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"RANK={env.get('RANK')!r} and WORLD_SIZE={env.get('WORLD_SIZE')!r} must be integers; "
                         "unset them to run as one process.") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world}); start the processes with "
                         "accelerate launch or torchrun, or unset both to run as one process.")
    return rank, world


def local_world(environ: Mapping[str, str] | None = None) -> int:
    """Processes on this machine (LOCAL_WORLD_SIZE, else 1): they share its CPU cores."""
    env = os.environ if environ is None else environ
    return max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))


def shard(paths: Sequence, rank: int, world: int) -> list:
    """This rank's photos: every world-th from `rank` on. Disjoint over ranks, together every photo once, and
    balanced to one photo (a folder's neighbouring photos, often alike in size, go to different ranks)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}.")
    return list(paths[rank::world])


def part_paths(out_dir, rank: int) -> tuple[Path, Path]:
    """(part CSV, part report JSON) of one rank in the output folder."""
    out_dir = Path(out_dir)
    return out_dir / PART_CSV.format(rank=rank), out_dir / PART_REPORT.format(rank=rank)


def write_part(out_dir, rank: int, rows: list[list], entries: Sequence[ReportPhoto] | None = None) -> Path:
    """Write one rank's rows (CSV_HEADER) and, when given, its report rows; the CSV last: it marks the rank done.

    Written even when empty (a rank whose photos all failed, or one with no photos), so rank 0 never waits
    for a rank that has finished.
    """
    csv_path, report_path = part_paths(out_dir, rank)
    if entries is not None:
        atomic_write_json(report_path, [asdict(e) for e in entries])
    return write_predictions_csv(rows, csv_path)


def wait_for_parts(out_dir, world: int, timeout: float = MERGE_TIMEOUT_S, poll: float = 0.5) -> None:
    """Block until every rank's part CSV exists; TimeoutError naming the missing ranks after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r in range(world) if not part_paths(out_dir, r)[0].is_file()]
        if not missing:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(PART_CSV.format(rank=r) for r in missing)
            raise TimeoutError(
                f"rank 0 waited {timeout:g} s for {names} in {out_dir}: rank(s) {', '.join(map(str, missing))} did "
                "not finish. Look for their error above; their masks written so far are kept. Rerun with "
                "--merge-timeout SECONDS if they are only slow, or with fewer processes.")
        time.sleep(poll)


def _read_part_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != CSV_HEADER:
            raise ValueError(f"{path} does not start with the predictions header {','.join(CSV_HEADER)}; "
                             "delete it and rerun.")
        return [row for row in reader if row]


def merge_parts(out_dir, world: int, photos: Sequence[str], *, timeout: float = MERGE_TIMEOUT_S,
                poll: float = 0.5, report: bool = False) -> tuple[list[list], list[ReportPhoto]]:
    """Wait for every rank's part, then (rows, report entries) in the order of `photos` (the `photo` column).

    photos: every photo's CSV name in the original order (what each rank wrote as `photo`); a photo no rank
    wrote (it could not be read) is skipped. Report entries are [] unless `report`. The parts stay on disk:
    call `remove_parts` once the merged files are written, so a crash in between loses nothing.
    """
    wait_for_parts(out_dir, world, timeout, poll)
    rows_by_photo: dict[str, list[list]] = {}
    entries_by_photo: dict[str, ReportPhoto] = {}
    for rank in range(world):
        csv_path, report_path = part_paths(out_dir, rank)
        for row in _read_part_csv(csv_path):
            rows_by_photo.setdefault(row[0], []).append(row)
        if report:
            if not report_path.is_file():
                raise FileNotFoundError(f"{report_path} is missing although {csv_path.name} exists: were the "
                                        "processes started with different --report flags? Rerun them together.")
            for item in json.loads(report_path.read_text(encoding="utf-8")):
                entries_by_photo[item["photo"]] = ReportPhoto(**item)
    unknown = sorted(set(rows_by_photo) - set(photos))
    if unknown:
        raise ValueError(f"The part files in {out_dir} name {unknown[0]}, which is not among this run's photos: "
                         "a leftover from another run? Delete the predictions.rank*.csv files and rerun.")
    rows = [row for photo in photos for row in rows_by_photo.get(photo, [])]
    entries = [entries_by_photo[p] for p in photos if p in entries_by_photo] if report else []
    return rows, entries


def remove_parts(out_dir, world: int) -> None:
    """Delete every rank's part files (a missing one is fine)."""
    for rank in range(world):
        for path in part_paths(out_dir, rank):
            path.unlink(missing_ok=True)


def clear_stale_part(out_dir, rank: int) -> None:
    """Remove this rank's part files left by an earlier run that stopped before its merge; call at the start."""
    for path in part_paths(out_dir, rank):
        path.unlink(missing_ok=True)

