#!/usr/bin/env bash
# What /metrics and the request log cost a call: two vae-servers on free loopback ports, the same model, one with
# the flags A and one with the flags B, measured side by side by `vae-bench grpc_ab` (interleaved rounds of Encode
# b=1 p50 and C=32 b=1 throughput). Prints vae-bench's JSON line; B/A ratios < 1 for throughput, > 1 for latency,
# are B's cost.
#   bench/metrics-cost.sh [SECONDS=2] [ROUNDS=6]
# A_FLAGS / B_FLAGS override the two servers' flags (default: metrics and log on vs both off).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-${ROOT}/build}"
SECONDS_PER_POINT="${1:-2}"
ROUNDS="${2:-6}"
A_FLAGS="${A_FLAGS:---metrics=false --log_requests=false}"
B_FLAGS="${B_FLAGS:---metrics=true --log_requests=false}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "${pid}" 2>/dev/null; then
      kill -TERM "${pid}"
      wait "${pid}" || true
    fi
  done
  rm -rf "${work}"
}
trap cleanup EXIT
start() {  # NAME FLAGS...: starts a server in the background (its PID appended to pids)
  local name="$1"
  shift
  # A free HTTP port: /metrics is served, as in production (and scraped by nobody during the run).
  local http_port
  http_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${BUILD}/server/vae-server" --host=127.0.0.1 --port=0 --http_port="${http_port}" --model_dir="${work}/${name}" \
    --data_dir="${work}" "$@" >"${work}/${name}.log" 2>&1 &
  pids+=($!)
}
# shellcheck disable=SC2086
start a ${A_FLAGS}
# shellcheck disable=SC2086
start b ${B_FLAGS}
a="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/a.log" "${pids[0]}" 120)"
b="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/b.log" "${pids[1]}" 120)"
echo "A: ${A_FLAGS}  B: ${B_FLAGS}" >&2
"${BUILD}/bench/vae-bench" grpc_ab --server="${a}" --server_b="${b}" --seconds="${SECONDS_PER_POINT}" \
  --ratio_rounds="${ROUNDS}" --latency_calls="${LATENCY_CALLS:-2000}" --json | tail -n 1
