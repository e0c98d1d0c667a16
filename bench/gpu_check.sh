#!/usr/bin/env bash
# The GPU check on a machine whose Python lacks some of chatforge's packages (the GPU machine):
# installs the carried wheels (bench/.wheels, made by bench/gpu_wheels.sh) into a directory of their
# own, puts it on PYTHONPATH, and runs bench/gpu_check.py. Nothing of the machine's own
# site-packages changes. bench/GPU_CHECK.md has the exact call.
#
#   bash bench/gpu_check.sh OUT_DIR [flags for bench/gpu_check.py]
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: bash bench/gpu_check.sh OUT_DIR [flags for bench/gpu_check.py]}
shift
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-bench/.wheels}
SITE=${SITE:-/tmp/chatforge-site}

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  # --no-deps: gpu_wheels.sh names the whole set; --no-index: there is no network there
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $SITE"
fi
export PYTHONUNBUFFERED=1  # progress lines as they happen, also through a pipe
exec "$PYTHON" bench/gpu_check.py --out "$out" "$@"
