#!/usr/bin/env bash
# The Docker tools the image builds and the compose stack need on a Debian bookworm host (as root,
# or through sudo): the engine and debootstrap from bookworm (DOCKER_APT_PACKAGES, passed by
# `make docker-deps`), and the compose v2 and buildx CLI plugins, which bookworm does not package
# (its docker-compose is the old Python 1.29): Debian trixie's builds, pinned, downloaded with apt
# from a private source list (the host's apt sources are left alone) and installed with apt, which
# checks their signatures and dependencies (libc6 only). Skipped when `docker compose` is v2 already.
set -euo pipefail
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
COMPOSE_DEB=${COMPOSE_DEB:-docker-compose=2.26.1-4}
BUILDX_DEB=${BUILDX_DEB:-docker-buildx=0.13.1+ds1-3}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive

if [ $# -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
if docker compose version 2>/dev/null | grep -q 'version v\?2'; then
  echo "host-tools: $(docker compose version)"; exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" > "$dir/sources.list"
APT=(-o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update -qq
(cd "$dir" && apt-get "${APT[@]}" download -qq "$COMPOSE_DEB" "$BUILDX_DEB")
$SUDO apt-get install -y -qq --no-install-recommends "$dir"/*.deb >/dev/null
echo "host-tools: $(docker compose version); $(docker buildx version)"
