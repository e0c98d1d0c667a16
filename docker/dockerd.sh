#!/usr/bin/env bash
# Start or stop a Docker engine for the builds and the compose stack on a host that runs none (CI,
# a container): Debian's dockerd without iptables or the default bridge, which work where netfilter
# is not available. Compose's user-defined networks still work (every service of
# docker-compose.yml is on one); builds use the host network (docker/build.sh). Nothing is started
# when an engine already answers.
#
# Storage: overlay2 when this kernel mounts an overlay on the data root's filesystem (probed), vfs
# otherwise. vfs works everywhere but stores every layer and every container as a full copy of its
# filesystem: the images and the compose stack then take tens of GB instead of a few
# (docker/README.md). DOCKERD_STORAGE_DRIVER chooses one.
#
#   docker/dockerd.sh start | stop
set -euo pipefail
STATE=${DOCKERD_STATE:-/var/tmp/chatforge-dockerd}
DATA_ROOT=${DOCKERD_DATA_ROOT:-/var/lib/docker}

storage_driver() {  # overlay2 when an overlay mounts beside the data root, else vfs
  if [ -n "${DOCKERD_STORAGE_DRIVER:-}" ]; then echo "$DOCKERD_STORAGE_DRIVER"; return; fi
  mkdir -p "$DATA_ROOT"
  local probe
  probe=$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX")
  mkdir "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
  if mount -t overlay overlay \
      -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"; rm -rf "$probe"; echo overlay2
  else
    rm -rf "$probe"; echo vfs
  fi
}

launch() {  # launch <driver>: start dockerd with it; 0 once it answers, 1 (and stopped) if not in 60 s
  echo "dockerd: storage driver $1, data root $DATA_ROOT ($(df -h --output=avail "$DATA_ROOT" | tail -1 | tr -d ' ') free)"
  # setsid: its own session, so the caller's terminal signals do not reach it; stopped by pid.
  setsid dockerd --data-root "$DATA_ROOT" --storage-driver="$1" --iptables=false --bridge=none >"$STATE/dockerd.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$STATE/dockerd.pid"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $pid, log $STATE/dockerd.log)"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  echo "dockerd.sh: the engine ($1) did not answer:" >&2; tail -20 "$STATE/dockerd.log" >&2
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  rm -f "$STATE/dockerd.pid"
  return 1
}

case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then
      echo "dockerd: an engine already answers"; exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd not found (make docker-deps)" >&2; exit 1; }
    mkdir -p "$STATE"
    driver=$(storage_driver)
    if launch "$driver"; then exit 0; fi
    # The probe mounted an overlay but the engine refused overlay2 (an older kernel's checks, a data
    # root on a filesystem overlay2 does not support): vfs works wherever dockerd runs.
    if [ "$driver" = overlay2 ] && [ -z "${DOCKERD_STORAGE_DRIVER:-}" ]; then
      echo "dockerd: overlay2 refused; trying vfs" >&2
      launch vfs && exit 0
    fi
    exit 1
    ;;
  stop)
    [ -f "$STATE/dockerd.pid" ] || { echo "dockerd: none started here"; exit 0; }
    pid=$(cat "$STATE/dockerd.pid")
    if kill "$pid" 2>/dev/null; then
      # dockerd stops its containers and its containerd before it exits.
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && { echo "dockerd.sh: dockerd $pid still running after 60 s" >&2; exit 1; }
    fi
    rm -f "$STATE/dockerd.pid"
    echo "dockerd: stopped"
    ;;
  *) echo "usage: docker/dockerd.sh start|stop" >&2; exit 2 ;;
esac
