#!/usr/bin/env bash
# The packages the GPU check needs that the GPU machine's image lacks, as wheels for its Python
# (CPython 3.12, manylinux x86_64), downloaded here into bench/.wheels (git-ignored). That machine
# has no network: the wheels travel with the working tree (carry bench/.wheels) and
# bench/gpu_check.sh installs them there with `pip --no-index --target` (bench/GPU_CHECK.md).
#
#   bash bench/gpu_wheels.sh                                        # cp312, for the GPU machine
#   PYTHON_VERSION=3.11 WHEELS=/tmp/wheels311 bash bench/gpu_wheels.sh   # the same set for another Python
#
# The image has torch, triton, transformers, tokenizers, safetensors, numpy, pyarrow, tiktoken,
# prometheus-client, regex, tqdm, pytest and pytest-timeout, and not pydantic or pydantic-settings:
# those two and their own dependencies are the set, pinned to the versions the test suite runs with.
# typing-extensions is there too, at a version nobody has read; pydantic needs a recent one, and a
# newer one is safe for everything else (it only adds), so it travels as well. Ray is not needed:
# the check runs every stage in-process.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_VERSION=${PYTHON_VERSION:-3.12}
WHEELS=${WHEELS:-bench/.wheels}
PACKAGES=(
  pydantic==2.14.4
  pydantic-core==2.50.5  # exactly the one pydantic 2.14.4 pins
  pydantic-settings==2.16.3
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  python-dotenv==1.2.4  # pydantic-settings imports it
)
# The carried paths and the working tree share 64 MiB; the bundled corpus takes ~10 of it.
MAX_MIB=8

abi="cp${PYTHON_VERSION/./}"
mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl  # one version of each: pip refuses a set with two
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
  --python-version "$PYTHON_VERSION" --implementation cp --abi "$abi" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "${PACKAGES[@]}"

count=$(ls "$WHEELS"/*.whl | wc -l)
if [ "$count" -ne "${#PACKAGES[@]}" ]; then
  echo "expected ${#PACKAGES[@]} wheels in $WHEELS, found $count" >&2
  exit 1
fi
for wheel in "$WHEELS"/*.whl; do
  case "$(basename "$wheel")" in
    *-py3-none-any.whl | *-"$abi"-"$abi"-*manylinux*x86_64*.whl) ;;
    *) echo "$(basename "$wheel"): not a wheel for CPython $PYTHON_VERSION on manylinux x86_64" >&2; exit 1 ;;
  esac
done
bytes=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
ls -l "$WHEELS"/*.whl | awk '{printf "%9d  %s\n", $5, $NF}'
echo "$count wheels, $((bytes / 1024)) KiB in $WHEELS (limit ${MAX_MIB} MiB)"
if [ "$bytes" -gt $((MAX_MIB * 1024 * 1024)) ]; then
  echo "the wheels outgrow their share of the 64 MiB that travels to the GPU machine" >&2
  exit 1
fi
