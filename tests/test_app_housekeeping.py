"""engine/app/housekeeping.py: the app's disk use, pruning oldest first under a cap, and its work dir's life."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.app.housekeeping import (
    PID_FILE,
    WORK_DIR_PREFIX,
    bytes_used,
    entries,
    job_paths,
    make_work_dir,
    prune,
    remove_work_dir,
    stale_work_dirs,
)

NOW = 1_000_000.0


def _put(path, size: int, age_s: float):
    """A file of `size` bytes last modified `age_s` seconds before NOW (its folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def _age(folder, age_s: float):
    os.utime(folder, (NOW - age_s, NOW - age_s))


def _layout(tmp_path):
    """uploads/ with three uploads of 100 bytes (oldest a), masks/ with one file, and a file outside."""
    uploads, masks = tmp_path / "work/uploads", tmp_path / "work/masks"
    for name, age in (("a", 500), ("b", 300), ("c", 100)):
        _put(uploads / name / "train/labels/x.txt", 60, age)
        _put(uploads / name / "train/images/x.jpg", 40, age)
        for sub in ("train/labels", "train/images", "train", ""):
            _age(uploads / name / sub, age)
    _put(masks / "m.png", 50, 200)
    outside = _put(tmp_path / "elsewhere/keep-me.bin", 1000, 10_000)
    return uploads, masks, outside


def test_bytes_used_counts_files_only(tmp_path):
    uploads, masks, _ = _layout(tmp_path)
    assert bytes_used([uploads, masks]) == 350
    assert bytes_used([tmp_path / "absent"]) == 0
    assert [e.path.name for e in entries([uploads, masks])] == ["a", "b", "m.png", "c"]  # oldest first


def test_prune_deletes_the_oldest_until_under_the_cap(tmp_path):
    uploads, masks, outside = _layout(tmp_path)
    deleted = prune([uploads, masks], 200, now=NOW)
    assert [p.name for p in deleted] == ["a", "b"]  # 350 -> 250 -> 150 <= 200
    assert bytes_used([uploads, masks]) == 150 and (uploads / "c").is_dir() and (masks / "m.png").is_file()
    assert outside.read_bytes() == b"x" * 1000
    assert prune([uploads, masks], 200, now=NOW) == []  # under the cap: nothing more goes


def test_prune_keeps_protected_and_recent_entries(tmp_path):
    uploads, masks, _ = _layout(tmp_path)
    deleted = prune([uploads, masks], 0, keep=[uploads / "a" / "train", None], min_age_s=150, now=NOW)
    assert [p.name for p in deleted] == ["b", "m.png"]  # a holds a kept path; c is newer than 150 s
    assert (uploads / "a/train/images/x.jpg").is_file() and (uploads / "c").is_dir()


def test_prune_by_age_and_links_are_not_followed(tmp_path):
    uploads, masks, outside = _layout(tmp_path)
    (uploads / "link").symlink_to(outside.parent)  # a link to a folder outside: deleted as a link only
    os.utime(uploads / "link", (NOW - 9_000, NOW - 9_000), follow_symlinks=False)
    deleted = prune([uploads], 10**9, max_age_s=400, now=NOW)
    assert sorted(p.name for p in deleted) == ["a", "link"]
    assert not (uploads / "link").exists() and outside.is_file() and (uploads / "b").is_dir()


def test_work_dir_is_marked_removed_and_stale_ones_found(tmp_path):
    work = make_work_dir(tmp_path)
    assert work.name.startswith(WORK_DIR_PREFIX) and (work / PID_FILE).read_text() == str(os.getpid())
    (work / "masks").mkdir()
    assert stale_work_dirs(tmp_path) == []  # this process is alive
    remove_work_dir(work)
    assert not work.exists()
    mine = tmp_path / "not-the-apps"
    mine.mkdir()
    remove_work_dir(mine)  # not a work dir: left alone
    assert mine.is_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = make_work_dir(tmp_path)
    (killed / PID_FILE).write_text(dead.stdout.strip())  # a process that has exited (as after kill -9)
    unmarked = tmp_path / f"{WORK_DIR_PREFIX}unmarked"
    unmarked.mkdir()
    assert stale_work_dirs(tmp_path) == [killed]


def test_work_dir_is_removed_when_the_app_process_exits(tmp_path):
    code = ("import sys, atexit; sys.path.insert(0, '.');"
            "from engine.app.housekeeping import make_work_dir, remove_work_dir;"
            f"w = make_work_dir({str(tmp_path)!r}); atexit.register(remove_work_dir, w); print(w)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    made = out.stdout.strip()
    assert made.startswith(str(tmp_path)) and not os.path.exists(made)


def test_job_paths_names_the_run_its_data_and_model(tmp_path):
    run = tmp_path / "checkpoints/run-1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        '{"data": [{"path": "/w/uploads/set-1/wrap", "prompts": ["x"]}], "model": "/c/base", "epochs": 2}')
    assert job_paths(run) == [run, Path("/w/uploads/set-1/wrap"), Path("/c/base")]
    assert job_paths(tmp_path / "no-config") == [tmp_path / "no-config"] and job_paths(None) == []


def _app_env(tmp_path) -> dict:
    return {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}


@pytest.mark.slow
def test_the_app_removes_its_work_dir_at_exit_and_stale_ones_at_start(tmp_path, shared_data):
    stale = make_work_dir(tmp_path)  # left by an app process killed with kill -9
    (stale / PID_FILE).write_text("999999999")
    (stale / "uploads/old-set").mkdir(parents=True)
    code = ("import pathlib, sys, app; "
            f"app.build_app(checkpoints_dir={str(tmp_path / 'c')!r}, export_dir={str(tmp_path / 'e')!r}, "
            f"data_root={str(shared_data)!r}); "
            f"print(sorted(p.name for p in pathlib.Path({str(tmp_path)!r}).glob('{WORK_DIR_PREFIX}*')))")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo,
                         env=_app_env(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    during = eval(out.stdout.strip().splitlines()[-1])  # the work dirs while the app ran: its own only
    assert len(during) == 1 and during[0] != stale.name
    assert not stale.exists() and list(tmp_path.glob(f"{WORK_DIR_PREFIX}*")) == []  # its own went at exit


@pytest.mark.slow
def test_the_app_prunes_its_oldest_files_past_the_disk_cap(tmp_path, tiny_model_dir, shared_data):
    import app
    from engine.app.public import Limits, PublicSettings

    def context(public: bool, default=tiny_model_dir):
        return app.make_context(checkpoints_dir=tmp_path / "runs", export_dir=tmp_path / "export",
                                data_root=shared_data, work_dir=tmp_path / "work", default_model=str(default),
                                public=PublicSettings(enabled=public, limits=Limits(disk_gb=3000 / 1024**3)))

    old = os.path.getmtime(tmp_path) - 7200
    files = {"work/uploads/old-set/a.txt": 2000, "work/masks/old/a.png": 2000, "runs/old-run/w.bin": 2000,
             "work/exports/recent/e.zip": 500}
    for name, size in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        if "recent" not in name:
            age = old - 100 if "uploads" in name else old  # the upload is the oldest
            os.utime(path, (age, age))
            os.utime(path.parent, (age, age))
    context(public=False).call_dir("masks")  # a request writes: the oldest go until under 3000 bytes
    assert not (tmp_path / "work/uploads/old-set").exists()  # 4500 -> 2500 bytes: under the cap
    assert (tmp_path / "work/masks/old/a.png").is_file() and (tmp_path / "work/exports/recent/e.zip").is_file()
    assert (tmp_path / "runs/old-run/w.bin").is_file()  # the server's runs are never the app's to prune
    # Public: an idle visitor's folder goes, oldest first; a live visitor's, the server's runs and the default
    # model stay, however old.
    from engine.app.visitors import visitor_workspace

    base = shutil.copytree(tiny_model_dir, tmp_path / "runs/base")
    idle = visitor_workspace(tmp_path / "work", "idle-visitor", now=old - 3 * 3600)
    live = visitor_workspace(tmp_path / "work", "live-visitor")
    for ws in (idle, live):
        (ws.runs / "r").mkdir()
        (ws.runs / "r" / "w.bin").write_bytes(b"x" * 2000)
    for path in [base, *base.iterdir(), idle.root, *idle.root.rglob("*"), live.runs / "r" / "w.bin"]:
        if path.name != ".seen":
            os.utime(path, (old - 500, old - 500))
    context(public=True, default=base).tidy()
    assert not idle.root.exists() and (live.runs / "r" / "w.bin").is_file()
    assert (base / "config.json").is_file() and (tmp_path / "runs/old-run/w.bin").is_file()


def test_may_delete_is_the_one_rule_and_refuses_each_protected_kind(tmp_path):
    """Whatever folders a caller hands to `prune`, the rule keeps: a tracked file, a shipped model, the default
    model, a kept path, anything outside the folders given, and anything reached through a link."""
    from engine.app.housekeeping import may_delete, never_deleted
    from engine.paths import CHECKPOINTS_DIR, REPO_ROOT, SHIPPED_MODELS

    work = tmp_path / "work"
    own = _put(work / "masks" / "own.png", 10, 500)
    default = tmp_path / "work" / "masks" / "default-model"
    default.mkdir()
    outside = _put(tmp_path / "elsewhere" / "x.bin", 10, 500)
    (work / "masks" / "link-out").symlink_to(outside)
    linked = tmp_path / "linked-folder"
    linked.symlink_to(tmp_path / "elsewhere")
    assert may_delete(own, [work / "masks"])
    assert not may_delete(default, [work / "masks"], keep=[default])  # the default model (a kept path)
    assert not may_delete(outside, [work / "masks"])  # outside the folders given
    assert not may_delete(outside, [linked])  # a folder that is a link
    assert may_delete(work / "masks" / "link-out", [work / "masks"])  # the link itself, never what it points at
    for shipped in SHIPPED_MODELS:  # even when a caller hands the repository's own folders to the clean-up
        assert not may_delete(shipped, [CHECKPOINTS_DIR])
    for name in ("README.md", "engine", ".git", ".venv", "tests"):  # tracked or not: the repository's own
        assert not may_delete(REPO_ROOT / name, [REPO_ROOT]), name
    (tmp_path / "clone" / ".git").mkdir(parents=True)
    assert not may_delete(tmp_path / "clone" / ".git", [tmp_path / "clone"])  # any .git
    assert REPO_ROOT.joinpath("app.py").resolve() in never_deleted()
    # The rule inside prune (only temporary folders are handed to it here: never the repository's own).
    deleted = prune([work / "masks", linked], 0, keep=[default], min_age_s=0)
    assert sorted(p.name for p in deleted) == ["link-out", "own.png"]
    assert outside.is_file() and default.is_dir() and all(p.is_dir() for p in SHIPPED_MODELS)
