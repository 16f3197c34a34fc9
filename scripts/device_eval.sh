#!/usr/bin/env bash
# The accuracy report of docs/accuracy.md on the GPU device (scripts/accuracy_report.py).
#
# Stage the text first (git-ignored; never commit data): .device/data/valid.txt (wikitext-2 valid,
# the calibration text: a training file in the domain of the test text) and
# .device/evaldata/test.txt (wikitext-2 test, evaluation only), then
#   run(command="bash scripts/device_eval.sh", carry=[".device/data", ".device/evaldata"])
# Writes $OUT/results.json, $OUT/report.log and the group min-max checkpoints $OUT/<model>-minmax/.
# Only pure Python is needed there, so the package is put on PYTHONPATH as a folder of links
# instead of being built (scripts/pkg_links.sh).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/eval}
mkdir -p "$OUT"
source "$(dirname "$0")/pkg_links.sh"    # the package on PYTHONPATH, unbuilt
python scripts/accuracy_report.py --text .device/evaldata/test.txt --calib-text .device/data/valid.txt \
  --out "$OUT" --device cuda --batch 16 "$@" 2>&1 | grep -v "falling back" | tee "$OUT/report.log"
