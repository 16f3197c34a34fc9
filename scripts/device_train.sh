#!/usr/bin/env bash
# Trains the shipped models (qmamba/models/) at once on the one GPU of the device machine.
#
# Run from the repository root on the device, with the training text staged (git-ignored) in
# .device/data/ (tinyshakespeare input.txt and wikitext-2 valid.txt; never test.txt):
#   run(command="bash scripts/device_train.sh", carry=[".device/data"])
# Each variant writes $OUT/<name>/{config.json,model.safetensors,train_log.json} and
# $OUT/<name>.log; copy the first two into qmamba/models/<name>/.
# Only pure Python is needed there, so the package is put on PYTHONPATH as a folder of links
# instead of being built, which would compile the CUDA kernels first (scripts/pkg_links.sh).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/train}
DATA=${DATA:-.device/data}
BUDGET=${BUDGET:-240}   # seconds of training per variant, after compiling; variants run in parallel
VARIANTS=${VARIANTS:-"mamba2-tiny-g1 mamba2-tiny-g4"}
mkdir -p "$OUT"
source "$(dirname "$0")/pkg_links.sh"    # the package on PYTHONPATH, unbuilt
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
pids=()
for name in $VARIANTS; do
  python -m qmamba.export.train --variant "$name" --data "$DATA/input.txt" "$DATA/valid.txt" \
    --out "$OUT/$name" --seed 0 --time-budget "$BUDGET" --batch 32 --seq-len 512 --lr 2e-3 \
    --log-every 100 --compile > "$OUT/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for name in $VARIANTS; do echo "== $name"; grep -v "falling back" "$OUT/$name.log" | tail -n 12; done
exit $status
