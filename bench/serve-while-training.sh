#!/usr/bin/env bash
# Serving while training (issue #15 item 4), in one run against one vae-server (fresh mnist model, the given extra
# flags; environment variables such as OMP_WAIT_POLICY reach it too):
#   1. idle: Encode b=1 from 1 connection (p50, p99) and from 32 connections (req/s);
#   2. training alone: `vae-client train` of TRAIN_IMAGES images per epoch, the median epoch images/s;
#   3. the same measurements as 1 while a training job runs, and its epoch images/s while the 32 connections load it.
# Prints one line per figure with the ratio (training / idle) and the issue's targets (p99 <= 2x, training >= 0.5x).
#   bench/serve-while-training.sh [SECONDS=5] [-- extra vae-server flags, e.g. --threads=1]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-${ROOT}/build}"
SECS="${1:-5}"
shift || true
[[ "${1:-}" == "--" ]] && shift
TRAIN_IMAGES="${TRAIN_IMAGES:-20000}"
# shellcheck source=bench/h2load-lib.sh
source "${ROOT}/bench/h2load-lib.sh"
work="$(mktemp -d)"
server_pid=""
train_pid=""
cleanup() {
  [[ -n "${train_pid}" ]] && kill -INT "${train_pid}" 2>/dev/null && wait "${train_pid}" 2>/dev/null || true
  [[ -n "${server_pid}" ]] && kill -TERM "${server_pid}" 2>/dev/null && wait "${server_pid}" 2>/dev/null || true
  rm -rf "${work}"
}
trap cleanup EXIT

"${BUILD}/server/vae-server" --port=0 --model_dir="${work}/models" --data_dir="${DATA_DIR:-${ROOT}/data}" "$@" \
  >"${work}/server.log" 2>&1 &
server_pid=$!
address="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/server.log" "${server_pid}" 120)"
h2load_stubs "${work}/gen"
h2load_requests "${work}/gen" "${address}" "${work}/req"
encode="${work}/req/encode_b1"

# train EPOCHS LOG: a training job in the background, each stdout line stamped with the time it arrived.
train() {
  stdbuf -oL "${BUILD}/client/vae-client" --server="${address}" train --dataset=mnist --epochs="$1" \
    --max_train_images="${TRAIN_IMAGES}" > >(while IFS= read -r line; do echo "$(date +%s.%N) ${line}"; done >"$2") \
    2>/dev/null &
  train_pid=$!
}
# epoch_rates LOG FROM TO: images/s of the epochs whose line arrived in [FROM, TO] (seconds since the epoch).
epoch_rates() {
  awk -v from="$2" -v to="$3" '$1 >= from && $1 <= to && / img\/s/ {
    for (i = 1; i <= NF; i++) if ($i == "img/s,") { v = $(i - 1); gsub(",", "", v); print v } }' "$1"
}

read -r idle_c1_rps idle_p50 idle_p99 < <(h2load_run "${address}" Encode "${encode}" 1 "${SECS}" "${work}/idle_c1")
read -r idle_c32_rps _ _ < <(h2load_run "${address}" Encode "${encode}" 32 "${SECS}" "${work}/idle_c32")

train 3 "${work}/alone.log"
wait "${train_pid}" || true
train_pid=""
alone="$(epoch_rates "${work}/alone.log" 0 9e18 | median)"

train 1000 "${work}/loaded.log"
for _ in $(seq 1200); do grep -q "img/s" "${work}/loaded.log" 2>/dev/null && break; sleep 0.1; done  # epoch 1 done
grep -q "img/s" "${work}/loaded.log" || { echo "the training job did not finish an epoch in 120 s" >&2; exit 1; }
read -r busy_c1_rps busy_p50 busy_p99 < <(h2load_run "${address}" Encode "${encode}" 1 "${SECS}" "${work}/busy_c1")
# The epochs that ended at least 1.5 s (warm-up + a margin) into the 32-connection load and before its end.
load_start="$(date +%s.%N)"
read -r busy_c32_rps _ _ < <(h2load_run "${address}" Encode "${encode}" 32 "${SECS}" "${work}/busy_c32")
load_end="$(date +%s.%N)"
loaded="$(epoch_rates "${work}/loaded.log" "$(awk -v t="${load_start}" 'BEGIN { print t + 1.5 }')" "${load_end}" | median)"
kill -INT "${train_pid}" 2>/dev/null && wait "${train_pid}" 2>/dev/null || true
train_pid=""

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "vae-server $* (OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}), ${SECS} s per point, ${TRAIN_IMAGES} images/epoch"
printf "%-36s %12s %14s %8s  %s\n" figure idle training ratio target
printf "%-36s %12.0f %14.0f %8s  %s\n" "Encode b=1 p50, 1 conn (us)" "${idle_p50}" "${busy_p50}" \
  "$(ratio "${busy_p50}" "${idle_p50}")" ""
printf "%-36s %12.0f %14.0f %8s  %s\n" "Encode b=1 p99, 1 conn (us)" "${idle_p99}" "${busy_p99}" \
  "$(ratio "${busy_p99}" "${idle_p99}")" "<= 2"
printf "%-36s %12.0f %14.0f %8s  %s\n" "Encode b=1 req/s, 1 conn" "${idle_c1_rps}" "${busy_c1_rps}" \
  "$(ratio "${busy_c1_rps}" "${idle_c1_rps}")" ""
printf "%-36s %12.0f %14.0f %8s  %s\n" "Encode b=1 req/s, 32 conns" "${idle_c32_rps}" "${busy_c32_rps}" \
  "$(ratio "${busy_c32_rps}" "${idle_c32_rps}")" ""
printf "%-36s %12.0f %14.0f %8s  %s\n" "training images/s (none / 32 conns)" "${alone:-0}" "${loaded:-0}" \
  "$(ratio "${loaded:-0}" "${alone:-0}")" ">= 0.5"
