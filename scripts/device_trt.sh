#!/usr/bin/env bash
# The TensorRT device suite: plugins + runner built against TensorRT 8.6 (staged onto the GPU machine in
# 11 chunks), engines checked against ONNX Runtime, then benchmarks. Logs go to $OUT (default ./out).
#
# One command, sent once per chunk (scripts/trt86_chunks.sh makes them), back to back (the machine
# keeps /tmp only while it stays warm):
#   run(command="bash scripts/device_trt.sh", carry=[".device/trt86s/p00"])
#   ... p01 ... p11 ...
#   run(command="bash scripts/device_trt.sh", carry=[".device/trt86s/p12", ".deps", ".device/data", ".whl"])
# (.deps: TensorRT headers; .device/data: a copy of tinyshakespeare/input.txt for calibrating the tiny
# models; .whl: the polygraphy wheel, not in the machine's image.)
# Each call files the chunk it carries; once all are there it builds, tests and benchmarks in the same
# call. A later call with no chunk (and /tmp/trt86 still there) reruns the suite. Where TensorRT is
# installed, set TensorRT_ROOT (and TensorRT_INCLUDE_DIR if its headers live elsewhere): no staging.
# Steps: QMAMBA_TRT_STEPS="probe gpu test bench" (default "test bench"; probe: scripts/trt86_probe.py;
# gpu: the model's CUDA tests without TensorRT, tests/export -m gpu; kernels: the CUDA kernel tests);
# QMAMBA_TRT_TEST_FILTER: a pytest -k expression for the test step; QMAMBA_PROBE_ONLY: probe variants;
# QMAMBA_BENCH_ARGS: arguments of scripts/bench_trt.py; bisect: scripts/trt_bisect.py for
# QMAMBA_BISECT_MODELS (default g1) with QMAMBA_BISECT_ARGS; gdb-open: `qmamba_trt info` on each engine of
# QMAMBA_GDB_ENGINES (default: the bench's) under cuda-gdb, with a backtrace where it crashes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Calibration text for the tiny models: the shared data folder is not on the GPU machine; carry a copy
# in the git-ignored .device/data (never in the repository).
[ -d .device/data ] && export QMAMBA_DATA=${QMAMBA_DATA:-$PWD/.device/data}

if [ -z "${TensorRT_ROOT:-}" ]; then
  for chunk in .device/trt86*/p*/; do
    [ -f "$chunk/recv.sh" ] && { bash "$chunk/recv.sh" || exit 1; }
  done
  if [ ! -f /tmp/trt86/env.sh ]; then
    echo "device_trt: TensorRT 8.6 not complete on this machine yet; send the next chunk"; exit 0
  fi
  source /tmp/trt86/env.sh
  export TensorRT_ROOT=$TRT86_ROOT
  export TensorRT_INCLUDE_DIR=${TensorRT_INCLUDE_DIR:-$PWD/.deps/tensorrt-8.6/include}
fi
[ -f "$TensorRT_INCLUDE_DIR/NvInferVersion.h" ] || { echo "device_trt: no TensorRT headers at $TensorRT_INCLUDE_DIR (carry .deps)"; exit 1; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"
start=$(date +%s)
# Kernels, plugins and runner for sm_90 only (speed), installed where a user's install puts them.
if ! python3 -m pip install --no-build-isolation --no-deps -q -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
     -C build-dir=build/device-trt -C "cmake.define.TensorRT_ROOT=$TensorRT_ROOT" \
     -C "cmake.define.TensorRT_INCLUDE_DIR=$TensorRT_INCLUDE_DIR" . > "$OUT/trt_build.log" 2>&1; then
  tail -40 "$OUT/trt_build.log"; exit 1
fi
grep -h "qmamba:" build/device-trt/CMakeCache.txt "$OUT/trt_build.log" 2>/dev/null | head -5
echo "build + install: $(( $(date +%s) - start )) s"
LIB=$(python3 -P -c "import qmamba, pathlib; print(pathlib.Path(qmamba.__file__).parent / 'lib')")
ls "$LIB"
# Polygraphy is not in the machine's image: take the carried wheel if there is one.
if ! python3 -c "import polygraphy" 2>/dev/null && ls .whl/polygraphy-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/polygraphy-*.whl && export PYTHONPATH=/tmp/site
fi

rc=0
for step in ${QMAMBA_TRT_STEPS:-test bench}; do
  case "$step" in
    test)
      # -P: the installed package, not the checkout's bare qmamba/ folder (python3 is the one with torch).
      timeout 540 python3 -P -m pytest -q -rs --tb=short ${QMAMBA_TRT_TEST_FILTER:+-k "$QMAMBA_TRT_TEST_FILTER"} \
        tests/trt_plugins/test_library_exports.py tests/trt_plugins/test_plugin_fields.py tests/runtime/test_trt_cli.py \
        tests/runtime/test_trt_engines.py 2>&1 | tee "$OUT/trt_tests.log" | tail -40
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
    gpu)
      # The model's CUDA paths without TensorRT: kernels op backend, calibration on CUDA.
      timeout 300 python3 -P -m pytest -q -rs -m gpu tests/export tests/trt_plugins/test_kernels_gpu.py::test_copy_moves_the_bytes 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
    kernels)
      # The CUDA kernels against their reference twins (no TensorRT).
      timeout 400 python3 -P -m pytest -q -rs tests/trt_plugins/test_kernels_gpu.py 2>&1 | tee "$OUT/kernel_tests.log" | tail -15
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
    probe)
      timeout 420 python3 scripts/trt86_probe.py --out "$OUT" ${QMAMBA_PROBE_ONLY:+--only "$QMAMBA_PROBE_ONLY"} 2>&1 | tee "$OUT/trt86_probe.log" | tail -40 ;;
    bisect)
      # Where the engine and ONNX Runtime part ways (scripts/trt_bisect.py), for QMAMBA_BISECT_MODELS.
      for m in ${QMAMBA_BISECT_MODELS:-g1}; do
        timeout 540 python3 -P scripts/trt_bisect.py --model "$m" --out "$OUT" ${QMAMBA_BISECT_ARGS:-} 2>&1 \
          | tee "$OUT/trt_bisect_$m.log" | grep -v "rel per row 0.00e+00 0.00e+00\|row \[0, 0\]" | tail -80
      done ;;
    gdb-open)
      # The machine has no gdb; cuda-gdb also debugs host code. A backtrace names the frame that crashed.
      read -r EXE PLUG < <(python3 -P -c "from qmamba.runtime import trt_runner as t
print(t.runner_executable(), t.plugin_library())")
      for e in ${QMAMBA_GDB_ENGINES:-/tmp/qmamba_bench/m*/engines/*.engine}; do
        echo "== $e ($(stat -c %s "$e") bytes)"
        timeout 240 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info registers rip" \
          --args "$EXE" info "$e" --plugins "$PLUG" 2>&1 | grep -v "^\[New Thread\|^\[Thread .* exited" \
          | tee -a "$OUT/gdb_open.log" | tail -60
      done ;;
    bench)
      timeout 560 python3 scripts/bench_trt.py --out "$OUT" ${QMAMBA_BENCH_ARGS:-} 2>&1 | tee "$OUT/trt_bench.log" | tail -60
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
done
echo "total: $(( $(date +%s) - start )) s"
exit $rc
