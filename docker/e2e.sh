#!/usr/bin/env bash
# The end-to-end suite (tests/e2e) against the compose stack, built by docker/build.sh: seed the
# artifact store (the suite's tokenizer and checkpoint, the corpus), `docker compose up --wait`
# (every healthcheck green), run the suite and the live compose checks, then `down -v` whatever
# happened. Needs a Docker engine with the compose plugin, the images, and the venv (make venv data).
#
#   docker/e2e.sh                   # the suite
#   docker/e2e.sh -k metrics        # pytest arguments go through
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d /var/tmp/chatforge-e2e.XXXXXX)
SERVICES=(redis tokenizer sandbox inference ray gateway prometheus sandbox-metrics)

free_ports() {  # n free TCP ports on 127.0.0.1
  "$PY" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r CHATFORGE_PORT CHATFORGE_E2E_INFERENCE_PORT CHATFORGE_E2E_TOKENIZER_METRICS_PORT \
  CHATFORGE_E2E_SANDBOX_METRICS_PORT CHATFORGE_E2E_PROMETHEUS_PORT <<< "$(free_ports 5)"
export CHATFORGE_PORT CHATFORGE_E2E_INFERENCE_PORT CHATFORGE_E2E_TOKENIZER_METRICS_PORT \
  CHATFORGE_E2E_SANDBOX_METRICS_PORT CHATFORGE_E2E_PROMETHEUS_PORT
export CHATFORGE_E2E_ARTIFACTS=$work/artifacts
export CHATFORGE_KEY_PEPPER=${CHATFORGE_KEY_PEPPER:-$("$PY" -c 'import secrets; print(secrets.token_hex(24))')}
COMPOSE=(docker compose -f docker-compose.yml -f docker/compose.e2e.yml)
export CHATFORGE_E2E_COMPOSE="${COMPOSE[*]}"

teardown() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "e2e: failed ($rc); the services' state and last log lines:" >&2
    "${COMPOSE[@]}" ps -a >&2 || true
    "${COMPOSE[@]}" logs --no-color --tail 40 >&2 || true
  fi
  "${COMPOSE[@]}" --profile monitoring down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT

start=$SECONDS
# What the stack serves and trains on: tests/e2e/seed.py's tokenizer and checkpoint (the suite's
# model), and the corpus for the training job. The Ray and inference containers run as uid 1000.
eval "$("$PY" -c 'from tests.e2e import seed; print(f"export CHATFORGE_CHECKPOINT={seed.CHECKPOINT} CHATFORGE_TOKENIZER={seed.TOKENIZER}")')"
"$PY" -m tests.e2e.seed "$CHATFORGE_E2E_ARTIFACTS" >/dev/null
cp -r data/corpus "$CHATFORGE_E2E_ARTIFACTS/corpus"
chown -R 1000:1000 "$CHATFORGE_E2E_ARTIFACTS"
echo "e2e: artifacts seeded in $((SECONDS - start)) s"

up=$SECONDS
"${COMPOSE[@]}" up -d --no-build --wait --wait-timeout 600 "${SERVICES[@]}"
echo "e2e: compose up, every service healthy, in $((SECONDS - up)) s"

export CHATFORGE_E2E_URL=http://127.0.0.1:$CHATFORGE_PORT
export CHATFORGE_E2E_ADMIN_KEY_COMMAND="${COMPOSE[*]} exec -T gateway chatforge keys create e2e-admin --scope admin"
export CHATFORGE_E2E_METRICS="inference=http://127.0.0.1:$CHATFORGE_E2E_INFERENCE_PORT/metrics,tokenizer=http://127.0.0.1:$CHATFORGE_E2E_TOKENIZER_METRICS_PORT/metrics,sandbox=http://127.0.0.1:$CHATFORGE_E2E_SANDBOX_METRICS_PORT/metrics"
export CHATFORGE_E2E_CORPUS_DIR=/artifacts/corpus
export CHATFORGE_E2E_PROMETHEUS=http://127.0.0.1:$CHATFORGE_E2E_PROMETHEUS_PORT
tests=$SECONDS
"$PY" -m pytest tests/e2e tests/platform/test_compose_live.py -q -p no:cacheprovider "$@"
echo "e2e: suite in $((SECONDS - tests)) s; all in $((SECONDS - start)) s"
