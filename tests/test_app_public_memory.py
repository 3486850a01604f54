"""Public mode's training caps fit a small Space: one training job at every cap at once (full-size CLIPSeg with
random weights, the same compute as the Hub model) is measured in a child process (VmHWM). The bound is
asserted, not a time. Run: pytest -m slow tests/test_app_public_memory.py -s (prints the figure)."""

import json
import subprocess
import sys

import pytest

from engine.app.public import Limits

from train_helpers import REPO_ROOT

pytestmark = pytest.mark.slow

MAX_PEAK_GB = 6.0  # a CPU Space has 16 GB; the sliders' maximum before the caps measured 17.4 GB

CHILD = r"""
import json, sys, tempfile, threading
from pathlib import Path
import torch
from engine.models import full_size_config, make_random_model_folder
from engine.train import DataSpec, StepEvent, make_config
from engine.train.loop import train

def gb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024 ** 2

caps, data = json.loads(sys.argv[1]), sys.argv[2]
torch.set_num_threads(2)
tmp = Path(tempfile.mkdtemp())
model = make_random_model_folder(tmp / "full", full_size_config())
idle = gb("VmRSS")
cfg = make_config(None, model=str(model), out=str(tmp / "run"), cache_dir=str(tmp / "cache"), epochs=1,
                  batch_size=caps["batch_size"], image_size=caps["image_size"], train="last_n",
                  unfreeze_vision_layers=caps["unfreeze_layers"], unfreeze_text_layers=caps["unfreeze_layers"],
                  feature_cache=False, max_train_images=caps["batch_size"], max_val_images=2,
                  data=[DataSpec(f"{data}/cracks", ("segment crack",)),
                        DataSpec(f"{data}/joints", ("segment taping area",))])
stop = threading.Event()
train(cfg, lambda e: stop.set() if isinstance(e, StepEvent) else None, stop)  # one optimiser step: the peak
print(json.dumps({"idle_gb": idle, "peak_gb": gb("VmHWM")}))
"""


def test_one_training_job_at_the_public_caps_fits(shared_data):
    limits = Limits()
    caps = {"batch_size": limits.batch_size, "image_size": limits.image_size, "unfreeze_layers": limits.unfreeze_layers}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(caps), str(shared_data)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO_ROOT),
                                                                           "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\npublic caps {caps}: peak {result['peak_gb']:.2f} GB (idle {result['idle_gb']:.2f} GB)")
    assert result["peak_gb"] <= MAX_PEAK_GB
