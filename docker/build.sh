#!/usr/bin/env bash
# Build every image of docker-compose.yml (the monitoring profile's Prometheus included), offline:
# the base from Debian's archive (docker/base.sh), the Python packages from the wheelhouse
# (docker/wheelhouse.sh), no container registry and no package index inside the builds.
#
#   docker/build.sh                    # base and wheelhouse when missing, then every image
#   docker/build.sh gateway sandbox    # some services' images
#   CHATFORGE_BASE= docker/build.sh    # the Dockerfiles' public bases instead (a registry is needed)
#
# CHATFORGE_TAG tags the images (default 0.1.0, as compose names them). Prints each step's time and
# the images' sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHATFORGE_BASE=${CHATFORGE_BASE-chatforge/base:bookworm}
# compose refuses to read the file without the pepper; building needs none.
export CHATFORGE_KEY_PEPPER=${CHATFORGE_KEY_PEPPER:-not-used-to-build}
start=$SECONDS

if [ "$CHATFORGE_BASE" = chatforge/base:bookworm ]; then
  docker/base.sh
fi
# Every extra's folder filled, or the wheelhouse made (the images with an empty folder use PyPI).
missing=0
for extra in gateway tokenizer sandbox serve train; do
  ls docker/wheelhouse/$extra/*.whl >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  docker/wheelhouse.sh 2> >(grep -v -e 'is ignored: it is neither' -e '^WARNING: Retrying' >&2)
fi
# A daemon without its default bridge (dockerd --bridge=none) runs builds on the host's network.
if [ -z "${CHATFORGE_BUILD_NETWORK:-}" ] && ! docker network inspect bridge >/dev/null 2>&1; then
  export CHATFORGE_BUILD_NETWORK=host
fi

images=$SECONDS
docker compose --profile monitoring build "$@"
echo "build: images in $((SECONDS - images)) s; all in $((SECONDS - start)) s"
docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^chatforge/' | sort
