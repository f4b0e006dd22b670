#!/usr/bin/env bash
# The floor under any unary call with this gRPC on this machine, and whether the server's threading changes it:
# `vae-grpc-floor` serves an empty GetModelInfo with the callback API (as vae-server does) or with the async API and
# one polling thread, and a separate client process calls it in sequence. Rounds alternate the two servers, because
# the host's neighbours move every figure within minutes. One JSON line per server per round. BENCHMARKS.md §6.
#   bench/grpc-floor.sh [ROUNDS=3] [CALLS=10000]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BUILD_DIR:-${ROOT}/build}/bench/vae-grpc-floor"
ROUNDS="${1:-3}"
CALLS="${2:-10000}"
server_pid=""
cleanup() { [[ -n "${server_pid}" ]] && kill "${server_pid}" 2>/dev/null || true; }
trap cleanup EXIT
for round in $(seq 1 "${ROUNDS}"); do
  for api in callback async; do
    coproc SERVER { "${BIN}" serve --api="${api}"; }
    server_pid="${SERVER_PID}"
    read -r -t 30 line <&"${SERVER[0]}"
    address="${line##* }"
    client="$("${BIN}" call --server="${address}" --calls="${CALLS}")"
    echo "$((CALLS + 500))" >&"${SERVER[1]}"  # the client also made 500 warm-up calls
    exec {SERVER[1]}>&-
    read -r -t 30 served <&"${SERVER[0]}"
    wait "${server_pid}" || true
    server_pid=""
    echo "{\"round\":${round},${served#\{},${client#\{}" | sed 's/},/,/'
  done
done
