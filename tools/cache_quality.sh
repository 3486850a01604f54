#!/usr/bin/env bash
# The feature cache's quality check: fine-tune the decoder of checkpoints/drywall-starter-base (stage 1 of the bundled
# model) from caches built different ways, and score each result on both valid sets (mIoU, absent-concept false
# alarms, presence AUROC).
#
#   bash tools/cache_quality.sh [OUT [BASE]]   # OUT default /tmp/cache-quality; about 3 min per run on 2 cores
#
# BASE (default checkpoints/drywall-starter-base) is the model whose decoder is fine-tuned. docs/training.md's cache table was
# measured on the stage-1 model of commit 144503c, before the starter was retrained with a holdout:
#   git archive 144503c checkpoints/drywall-starter-base | tar -x -C /tmp/prev
#   bash tools/cache_quality.sh /tmp/cache-quality /tmp/prev/checkpoints/drywall-starter-base
#
# Runs (10 epochs each, train photos only; select=last and calibrate_on=train keep the valid photos unseen):
#   fp32-k4 / bf16-k4        the cache built in fp32 or in bf16 (4 views per photo), seeds 0 and 1
#   bf16-k1, bf16-k2         1 or 2 views per photo, seeds 0 (and 1 for k2)
#   bf16-k1-grid, -k2-grid   plus flips and 90-degree turns of the cached token grid (cache_grid_augment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/cache-quality}
base=${2:-checkpoints/drywall-starter-base}
mkdir -p "$out"
data=../shared/data/drywall-qa

run() {  # run NAME SEED KEY=VALUE...
  local name=$1 seed=$2; shift 2
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  python -m engine train --model "$base" --image-size 224 --epochs 10 --out "$out/$name" \
    --set train=decoder --set select=last --set calibrate_on=train --set patience=0 --set seed="$seed" \
    --set cache_dir="$out/features" "${sets[@]}" > "$out/$name.log" 2>&1
  python -m engine evaluate --model "$out/$name" --data "$data/cracks/valid=segment crack" \
    --data "$data/joints/valid=segment taping area" --json "$out/$name.json" > /dev/null
}

run fp32-k4 0 cache_precision=fp32 cache_views=4
run bf16-k4 0 cache_precision=bf16 cache_views=4
run fp32-k4-seed1 1 cache_precision=fp32 cache_views=4
run bf16-k4-seed1 1 cache_precision=bf16 cache_views=4
run bf16-k1 0 cache_precision=bf16 cache_views=1
run bf16-k2 0 cache_precision=bf16 cache_views=2
run bf16-k2-seed1 1 cache_precision=bf16 cache_views=2
run bf16-k1-grid 0 cache_precision=bf16 cache_views=1 cache_grid_augment=true
run bf16-k2-grid 0 cache_precision=bf16 cache_views=2 cache_grid_augment=true

python - "$out" <<'PY'
import json, sys
from pathlib import Path

print(f"{'run':<16}{'crack mIoU':>11}{'taping mIoU':>12}{'crack FA':>10}{'taping FA':>10}{'crack AUROC':>12}{'taping AUROC':>13}")
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    p = json.loads(path.read_text())["prompts"]
    c, t = p["segment crack"], p["segment taping area"]
    print(f"{path.stem:<16}{c['miou']:>11.3f}{t['miou']:>12.3f}{c['absent']['false_alarm_rate']:>10.1%}"
          f"{t['absent']['false_alarm_rate']:>10.1%}{c['presence_auroc']:>12.3f}{t['presence_auroc']:>13.3f}")
PY
