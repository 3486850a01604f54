"""engine/train/checkpoint.py: atomic model folders with the training state (kill -9 proof), resume state,
the metrics history."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from engine.models import load_clipseg
from engine.train import make_config
from engine.train.checkpoint import (
    STATE_FILE,
    Optimiser,
    RunState,
    append_metrics,
    read_history,
    restore_state,
    resume_config,
    save_checkpoint,
    start_run_folder,
    training_state,
)

from train_helpers import REPO_ROOT

# The writer training really uses for best/ and last/: save_checkpoint with the training state.
SAVER = """
import random, sys
import torch
from engine.models import load_clipseg
from engine.train.checkpoint import save_checkpoint
model, tokenizer, _ = load_clipseg(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    model.decoder.film_add.bias.data.fill_(i)
    save_checkpoint(sys.argv[2], model, tokenizer, image_size=64, meta={"threshold": 0.5, "i": i},
                    state={"i": i, "rng_python": random.Random(i).getstate()})
"""


@pytest.mark.slow
def test_kill_9_during_saves_leaves_a_loadable_model(tiny_model_dir, tmp_path):
    dst = tmp_path / "last"
    shutil.copytree(tiny_model_dir, dst)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tiny_model_dir), str(dst)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        model, _, _ = load_clipseg(dst)  # raises if the folder were half-written
        meta = json.loads((dst / "drywall_qa.json").read_text())
        assert model.decoder.film_add.bias[0].item() == meta.get("i", model.decoder.film_add.bias[0].item())
        if "i" in meta:  # a folder written by save_checkpoint holds the state of the same save
            assert torch.load(dst / STATE_FILE, weights_only=False)["i"] == meta["i"]


def _optimiser():
    layer = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    return layer, Optimiser(optimizer, torch.amp.GradScaler("cpu", enabled=False))


def test_training_state_restores_counters_rngs_and_history(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    start_run_folder(run, make_config(None, out=str(run), epochs=4))
    for epoch in (1, 2, 3):
        append_metrics(run, {"epoch": epoch, "score": epoch / 10})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "sco')  # a line cut short by a crash
    _, opt = _optimiser()
    state = RunState(batch_size=8, rng=random.Random(5), global_step=40, best_score=0.3, best_epoch=2, bad_epochs=1)
    state.rng.random()
    model, tokenizer, _ = load_clipseg(tiny_model_dir)
    save_checkpoint(run / "last", model, tokenizer, image_size=64, meta={"threshold": 0.5},
                    state=training_state(opt, state, epoch=2))
    expected = (state.rng.random(), torch.rand(1).item(), np.random.rand())

    _, fresh_opt = _optimiser()
    fresh = RunState(batch_size=16, rng=random.Random(0))
    restore_state(run, fresh_opt, fresh)
    assert (fresh.start_epoch, fresh.global_step, fresh.best_score, fresh.best_epoch, fresh.bad_epochs,
            fresh.batch_size) == (3, 40, 0.3, 2, 1, 8)
    assert [r["epoch"] for r in fresh.history] == [1, 2]  # epochs after the saved one are dropped
    assert (fresh.rng.random(), torch.rand(1).item(), np.random.rand()) == expected
    assert fresh_opt.optimizer.state_dict()["state"][0]["step"] == 1


def test_read_history_skips_a_broken_line(tmp_path):
    append_metrics(tmp_path, {"epoch": 1})
    (tmp_path / "metrics.jsonl").open("a").write("not json\n")
    append_metrics(tmp_path, {"epoch": 2})
    assert read_history(tmp_path, before_epoch=10) == [{"epoch": 1}, {"epoch": 2}]
    assert read_history(tmp_path / "missing", before_epoch=10) == []


def test_resume_needs_the_training_state(tmp_path):
    cfg = make_config(None, out=str(tmp_path), epochs=7)
    with pytest.raises(ValueError, match="Cannot resume: .* has no training_state.pt"):
        resume_config(tmp_path, cfg)
    start_run_folder(tmp_path, make_config(None, out=str(tmp_path), epochs=3, lr=0.01))
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / STATE_FILE).write_bytes(b"")
    resumed = resume_config(tmp_path, cfg)
    assert resumed.epochs == 7 and resumed.lr == 0.01  # the saved settings, extended to cfg.epochs
