#!/usr/bin/env bash
# Start or stop a Docker engine for the builds and the compose stack on a host that runs none (CI,
# a container): Debian's dockerd with the vfs storage driver and without iptables or the default
# bridge, which work where overlayfs and netfilter are not available. Compose's user-defined
# networks still work (every service of docker-compose.yml is on one); builds use the host network
# (docker/build.sh). Nothing is started when an engine already answers.
#
#   docker/dockerd.sh start | stop
set -euo pipefail
STATE=${DOCKERD_STATE:-/var/tmp/chatforge-dockerd}
case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then
      echo "dockerd: an engine already answers"; exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd not found (make docker-deps)" >&2; exit 1; }
    mkdir -p "$STATE"
    # setsid: its own session, so the caller's terminal signals do not reach it; stopped by pid.
    setsid dockerd --storage-driver=vfs --iptables=false --bridge=none >"$STATE/dockerd.log" 2>&1 &
    echo $! > "$STATE/dockerd.pid"
    for _ in $(seq 60); do
      docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $(cat "$STATE/dockerd.pid"), log $STATE/dockerd.log)"; exit 0; }
      sleep 1
    done
    echo "dockerd.sh: the engine did not answer in 60 s:" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1
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
