# Sourced by the device scripts (scripts/device_eval.sh, scripts/device_train.sh): puts the
# package on PYTHONPATH as a folder of links (qmamba/, qmamba/export -> export/,
# qmamba/runtime -> runtime/) instead of building it (which would compile the CUDA kernels first;
# only pure Python is needed there). Run from the repository root.
PKG=$(mktemp -d)
mkdir "$PKG/qmamba"
for f in qmamba/*; do ln -s "$PWD/$f" "$PKG/qmamba/"; done
ln -s "$PWD/export" "$PKG/qmamba/export"
ln -s "$PWD/runtime" "$PKG/qmamba/runtime"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
