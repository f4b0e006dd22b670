#!/usr/bin/env bash
# Starts a vae-server on a free loopback port (fresh model dir, the given extra flags), runs
# `vae-bench grpc` against it, stops it, and prints vae-bench's JSON line (which includes the server's peak RSS).
#   bench/grpc-bench.sh [SECONDS=2] [-- extra vae-server flags, e.g. --enable_batching=false]
# BENCH_ARGS holds extra vae-bench flags, e.g. BENCH_ARGS="--batches=1 --clients=1,8,32" for a large preset.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-${ROOT}/build}"
SECONDS_PER_POINT="${1:-2}"
shift || true
[[ "${1:-}" == "--" ]] && shift
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "${server_pid}" ]] && kill -0 "${server_pid}" 2>/dev/null; then
    kill -TERM "${server_pid}"
    wait "${server_pid}" || true
  fi
  rm -rf "${work}"
}
trap cleanup EXIT
"${BUILD}/server/vae-server" --host=127.0.0.1 --port=0 --model_dir="${work}/models" \
  --data_dir="${DATA_DIR:-${ROOT}/data}" "$@" >"${work}/server.log" 2>&1 &
server_pid=$!
address="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/server.log" "${server_pid}" 120)"
# shellcheck disable=SC2086
"${BUILD}/bench/vae-bench" grpc --server="${address}" --server_pid="${server_pid}" --seconds="${SECONDS_PER_POINT}" \
  ${BENCH_ARGS:-} --json | tail -n 1
