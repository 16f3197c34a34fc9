#!/usr/bin/env bash
# Builds and checks the CUDA kernels on a GPU machine; logs go to $OUT (default ./out).
#
#   bash scripts/device_kernels.sh [all|test|sanitize|memcheck|profile|profile-decode|profile-source|bench|bench-quick|bench-decode|bench-step|read-bound|timeline|script] ...
#
# Builds the kernels with plain CMake (sm_90 only, for speed; the device image has no
# scikit-build-core for `pip install .`), points QMAMBA_KERNELS_LIB at the library, and makes
# `import qmamba` resolve to this checkout through a shadow package under /tmp (the wheel maps
# export/ and runtime/ into qmamba/). Then runs the steps named (default: all = test sanitize
# bench). Tests run through `pytest` (not `python -m pytest`, which would put the checkout's bare
# qmamba/ folder first on sys.path).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
[ "${steps[0]}" = all ] && steps=(test sanitize bench)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"
start=$(date +%s)
# build_kernels SRC DIR LOG [CMAKE ARGS...]: libqmamba_kernels of the tree SRC into DIR (sm_90), its log in
# $OUT/LOG (the tail printed when it fails).
build_kernels() {
  local src=$1 dir=$2 log=$OUT/$3
  shift 3
  if ! { cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "$@" &&
           cmake --build "$dir" --target qmamba_kernels -j 16; } > "$log" 2>&1; then
    tail -40 "$log"; return 1
  fi
}
build_kernels . build/device build.log || exit 1
export QMAMBA_KERNELS_LIB=$PWD/build/device/trt_plugins/libqmamba_kernels.so
# QMAMBA_PREV_SRC: a source tree of another version, carried in an ignored folder, e.g.
#   mkdir -p .device/prev && git archive REV CMakeLists.txt trt_plugins | tar -x -C .device/prev
# Its kernels are built too and bench-step measures them in the same run (QMAMBA_PREV_KERNELS_LIB).
if [ -n "${QMAMBA_PREV_SRC:-}" ]; then
  build_kernels "$QMAMBA_PREV_SRC" build/device-prev build_prev.log || exit 1
  export QMAMBA_PREV_KERNELS_LIB=$PWD/build/device-prev/trt_plugins/libqmamba_kernels.so
fi
shadow=/tmp/qmamba_shadow
rm -rf "$shadow" && mkdir -p "$shadow/qmamba"
cp -r qmamba/. "$shadow/qmamba/"
ln -s "$PWD/export" "$shadow/qmamba/export"
ln -s "$PWD/runtime" "$shadow/qmamba/runtime"
export PYTHONPATH=$shadow${PYTHONPATH:+:$PYTHONPATH}
echo "build: $(( $(date +%s) - start )) s"
rc=0
for step in "${steps[@]}"; do
  case "$step" in
    test)
      timeout 300 pytest -q -rs -s tests/trt_plugins/test_kernels.py tests/trt_plugins/test_kernels_gpu.py \
        2>&1 | tee "$OUT/tests.log" | grep -E "rel err|gap|passed|failed|FAILED|Error|error" | tail -60 || rc=1
      # The linears again with the dp4a kernel where tensor cores would run (QMAMBA_MMA=0).
      QMAMBA_MMA=0 timeout 120 pytest -q -rs tests/trt_plugins/test_kernels_gpu.py -k linear \
        2>&1 | tee "$OUT/tests_register_linear.log" | grep -E "passed|failed|FAILED|Error" | tail -20 || rc=1 ;;
    sanitize|memcheck)
      tools="memcheck racecheck synccheck"
      [ "$step" = memcheck ] && tools=memcheck
      for tool in $tools; do
        timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 1 python scripts/sanitize_kernels.py \
          > "$OUT/sanitize_$tool.log" 2>&1
        r=$?; echo "compute-sanitizer $tool: exit $r"; tail -3 "$OUT/sanitize_$tool.log"
        [ $r -ne 0 ] && rc=1
      done ;;
    profile)
      timeout 300 ncu --clock-control none --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis -k regex:quant_ python scripts/profile_kernels.py \
        > "$OUT/ncu.log" 2>&1 || rc=1
      grep -E "quant_|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Theoretical Occ|Block Limit|Issue Slots Busy|No Eligible" "$OUT/ncu.log" | head -80 ;;
    profile-decode)
      # One decode layer's kernels (in_proj, mixer, out_proj; 2.7b widths, batch 1) under Nsight Compute.
      timeout 300 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
        --section LaunchStats --section MemoryWorkloadAnalysis --section SchedulerStats \
        -k regex:"w8a8_linear|decode_mixer" python scripts/profile_kernels.py --decode > "$OUT/ncu_decode.log" 2>&1 || rc=1
      grep -E "w8a8_linear|decode_mixer|Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Theoretical Occ|Grid Size|Block Size|Issue Slots Busy|No Eligible|Stall|Warp Cycles Per Issued|Dynamic Shared" "$OUT/ncu_decode.log" | head -120 ;;
    profile-source)
      # Where one decode layer's kernels stall, per SASS instruction (scripts/ncu_hotspots.py), and the
      # stall reasons per issued instruction; the report and both tables stay in $OUT.
      timeout 300 ncu --clock-control none --section WarpStateStats --section SourceCounters --section LaunchStats \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum" \
        -k regex:"w8a8_linear|decode_mixer" -f -o "$OUT/decode" python scripts/profile_kernels.py --decode \
        > "$OUT/ncu_source.log" 2>&1 || rc=1
      ncu -i "$OUT/decode.ncu-rep" --page details --csv > "$OUT/ncu_details.csv" 2>&1
      ncu -i "$OUT/decode.ncu-rep" --page source --print-source sass --csv > "$OUT/ncu_sass.csv" 2>&1
      python -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    m = r.get("Metric Name", "")
    if "issue_stalled" in m and float(r["Metric Value"] or 0) > 0.05 or m == "smsp__inst_executed.sum":
        print(r["ID"], r["Kernel Name"][:40], m, r["Metric Value"])' "$OUT/ncu_details.csv"
      python scripts/ncu_hotspots.py "$OUT/ncu_sass.csv" --top 25 | cut -c1-150 | head -100 ;;
    bench)
      timeout 420 python benchmarks/bench_kernels.py --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    bench-decode)
      timeout 240 python benchmarks/bench_kernels.py --decode-only --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    bench-step)
      # A decode step of qmamba's decode kernels against its bandwidth bound, with and without
      # programmatic dependent launch (benchmarks/bench_decode_step.py).
      # QMAMBA_PREV_KERNELS_LIB: the previous version's library, measured in the same run.
      for pdl in ${QMAMBA_STEP_PDL:-1 0}; do  # QMAMBA_STEP_PDL=1: only with it
        # shellcheck disable=SC2086  # QMAMBA_STEP_ARGS: more arguments, split on spaces
        QMAMBA_PDL=$pdl timeout 240 python benchmarks/bench_decode_step.py ${QMAMBA_STEP_ARGS:-} \
          --json "$OUT/step_pdl$pdl.json" 2>&1 \
          | tee "$OUT/step_pdl$pdl.log" || rc=1
      done
      if [ -n "${QMAMBA_PREV_KERNELS_LIB:-}" ]; then
        echo "previous version: $QMAMBA_PREV_KERNELS_LIB"
        QMAMBA_KERNELS_LIB=$QMAMBA_PREV_KERNELS_LIB timeout 240 python benchmarks/bench_decode_step.py \
          --json "$OUT/step_prev.json" 2>&1 | tee "$OUT/step_prev.log" || rc=1
      fi ;;
    read-bound)
      # The floor under the decode kernels: a kernel that only reads a decode linear's weights
      # (benchmarks/bench_read_bound.py, CuPy).
      timeout 120 python benchmarks/bench_read_bound.py --json "$OUT/read_bound.json" 2>&1 | tee "$OUT/read_bound.log" || rc=1 ;;
    bench-quick)
      timeout 240 python benchmarks/bench_kernels.py --quick --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    timeline)
      # Where a decode step's time goes between kernels: per-block timestamps (scripts/step_timeline.py) from
      # a second build of the kernels with QMAMBA_TIMELINE; QMAMBA_TIMELINE_ARGS: more arguments.
      if ! build_kernels . build/device-timeline build_timeline.log -DQMAMBA_TIMELINE=ON; then
        rc=1
      else
        # shellcheck disable=SC2086  # QMAMBA_TIMELINE_ARGS: split on spaces
        QMAMBA_KERNELS_LIB=$PWD/build/device-timeline/trt_plugins/libqmamba_kernels.so timeout 120 \
          python scripts/step_timeline.py ${QMAMBA_TIMELINE_ARGS:-} --json "$OUT/timeline.json" 2>&1 \
          | tee "$OUT/timeline.log" || rc=1
      fi ;;
    script)
      # QMAMBA_STEP_SCRIPT: a script of measurements run with this build (an experiment's variants).
      bash "$QMAMBA_STEP_SCRIPT" 2>&1 | tee "$OUT/script.log" || rc=1 ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
done
echo "total: $(( $(date +%s) - start )) s"
exit $rc
