#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine (as root): installs the packages, fetches MNIST, builds,
# starts vae-server on a free localhost port, trains the `mnist` model for 2 epochs over gRPC with vae-client,
# samples a PNG grid, reconstructs test images, prints the model info, and stops the server with SIGTERM.
# Outputs land in OUT_DIR (default out/): samples.png, reconstructions.png, server.log, models/ (checkpoints).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATA_DIR="${DATA_DIR:-${ROOT}/data}"
export BUILD_DIR="${BUILD_DIR:-${ROOT}/build}"
OUT_DIR="${OUT_DIR:-${ROOT}/out}"
EPOCHS="${EPOCHS:-2}"

bash "${ROOT}/scripts/install-deps.sh"
bash "${ROOT}/scripts/fetch-data.sh" "${DATA_DIR}"
bash "${ROOT}/scripts/build.sh"

SERVER_BIN="${BUILD_DIR}/server/vae-server"
CLIENT_BIN="${BUILD_DIR}/client/vae-client"
mkdir -p "${OUT_DIR}/models"
LOG="${OUT_DIR}/server.log"

"${SERVER_BIN}" --host=127.0.0.1 --port=0 --model_dir="${OUT_DIR}/models" --data_dir="${DATA_DIR}" \
  --preset=mnist >"${LOG}" 2>&1 &
SERVER_PID=$!
cleanup() {
  if kill -0 "${SERVER_PID}" 2>/dev/null; then
    kill -TERM "${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

ADDR="$(bash "${ROOT}/scripts/wait-for-server.sh" "${LOG}" "${SERVER_PID}" 30)"
export VAE_SERVER="${ADDR}"
echo "demo: vae-server is at ${ADDR} (log: ${LOG})"

"${CLIENT_BIN}" health
"${CLIENT_BIN}" train --dataset=mnist --epochs="${EPOCHS}" --batch_size=128 --lr=0.001 --seed=1
"${CLIENT_BIN}" sample --count=64 --seed=1 --output="${OUT_DIR}/samples.png"
"${CLIENT_BIN}" reconstruct "${DATA_DIR}/mnist/t10k-images-idx3-ubyte" --limit=32 \
  --output="${OUT_DIR}/reconstructions.png"
"${CLIENT_BIN}" info

kill -TERM "${SERVER_PID}"
wait "${SERVER_PID}"
echo "demo: done; see ${OUT_DIR}/samples.png and ${OUT_DIR}/reconstructions.png"
