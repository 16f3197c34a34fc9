#!/usr/bin/env bash
# Re-splits the TensorRT 8.6 archive of ../shared/tools/trt86/prepare.sh into chunks small enough to
# travel beside this repository's working tree (the GPU machine takes 64 MiB a call; the tree holds
# ~17 MB of shipped models, so prepare.sh's 56 MiB chunks no longer fit). Writes .device/trt86s/pNN
# (git-ignored), each with ../shared/tools/trt86/recv.sh; scripts/device_trt.sh files them.
#   usage: bash scripts/trt86_chunks.sh [CHUNK_MIB (default 45)]
set -euo pipefail
ROOT="$(git rev-parse --show-toplevel)"
ARCHIVE="${TRT86_CACHE:-$HOME/.cache/trt86}/trt86.tar.zst"
TOOLS="$ROOT/../shared/tools/trt86"
[ -f "$ARCHIVE" ] || bash "$TOOLS/prepare.sh" "$ROOT"
OUT="$ROOT/.device/trt86s"
rm -rf "$OUT"; mkdir -p "$OUT"
(cd "$OUT" && split -b "${1:-45}m" -d -a 2 "$ARCHIVE" part.)
N=$(ls "$OUT"/part.* | wc -l)
i=0
for f in "$OUT"/part.*; do
  d="$OUT/p$(printf %02d $i)"; mkdir -p "$d"; mv "$f" "$d/"
  cp "$TOOLS/recv.sh" "$d/recv.sh"; echo "$N" > "$d/count"
  i=$((i + 1))
done
cp "$(command -v zstd)" "$OUT/p00/zstd"
echo "$N chunks in $OUT: send each with: run(command=\"bash scripts/device_trt.sh\", carry=[\".device/trt86s/pNN\"])"
echo "and the last with .deps, .device/data and .whl added to carry"
