#!/usr/bin/env bash
# Build the images' base offline: a Debian bookworm with CPython 3.11 and its venv module, made by
# debootstrap from the Debian archive and imported into Docker as chatforge/base:bookworm. For
# hosts that reach Debian's archive but no container registry; docker/build.sh passes it as every
# Dockerfile's BASE (whose default is the public python:3.11-slim-bookworm / debian:bookworm-slim).
#
#   docker/base.sh            # build unless the image exists
#   docker/base.sh --force    # rebuild
#
# Needs root, debootstrap and a Docker engine. MIRROR, SUITE and TAG override the defaults.
set -euo pipefail
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
TAG=${TAG:-chatforge/base:$SUITE}

if [ "${1:-}" != "--force" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base: $TAG exists (docker/base.sh --force rebuilds it)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base.sh: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root" >&2; exit 1; }

start=$SECONDS
root=$(mktemp -d /var/tmp/chatforge-base.XXXXXX)
chmod 755 "$root"  # the image's / (mktemp makes it 0700: no other user could run anything)
trap 'rm -rf "$root"' EXIT
# minbase: essential packages and apt only; python3-venv brings ensurepip (the images' pip).
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$root" "$MIRROR" > "$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# What an image never needs: apt's downloaded lists and packages, documentation, man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
# The apt source an image's `apt-get install` uses (debootstrap leaves the mirror it was given).
echo "deb $MIRROR $SUITE main" > "$root/etc/apt/sources.list"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE ($MIRROR) with python3, python3-venv, ca-certificates" \
  - "$TAG" >/dev/null
echo "base: $TAG built in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
