#!/usr/bin/env bash
# Builds and checks the CUDA kernels on a GPU machine; logs go to $OUT (default ./out).
#
#   bash scripts/device_kernels.sh [all|test|sanitize|bench|bench-quick] ...
#
# Installs qmamba (non-editable, CUDA kernels for sm_90 only, for speed) so that the library is
# found where a user's install puts it (qmamba/lib), then runs the steps named (default: all =
# test sanitize bench). Tests and scripts run through the installed package: `pytest` (not
# `python -m pytest`, which would import the checkout's bare qmamba/ folder first).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
[ "${steps[0]}" = all ] && steps=(test sanitize bench)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"
start=$(date +%s)
if ! pip install --no-build-isolation --no-deps -q -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
     -C build-dir=build/device . > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
echo "build + install: $(( $(date +%s) - start )) s"
rc=0
for step in "${steps[@]}"; do
  case "$step" in
    test)
      timeout 300 pytest -q -rs -s tests/trt_plugins/test_kernels.py tests/trt_plugins/test_kernels_gpu.py \
        2>&1 | tee "$OUT/tests.log" | grep -E "rel err|gap|passed|failed|FAILED|Error|error" | tail -60 || rc=1 ;;
    sanitize)
      for tool in memcheck racecheck synccheck; do
        timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 1 python scripts/sanitize_kernels.py \
          > "$OUT/sanitize_$tool.log" 2>&1
        r=$?; echo "compute-sanitizer $tool: exit $r"; tail -3 "$OUT/sanitize_$tool.log"
        [ $r -ne 0 ] && rc=1
      done ;;
    bench)
      timeout 420 python benchmarks/bench_kernels.py --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    bench-quick)
      timeout 240 python benchmarks/bench_kernels.py --quick --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
done
echo "total: $(( $(date +%s) - start )) s"
exit $rc
