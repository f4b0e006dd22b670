#!/usr/bin/env bash
# Training speed side by side: vae-bench (C++ LibTorch loop) and bench/torch_train.py (Python PyTorch, the same
# net, loss and data layout), same BLAS (libblas.so.3 -> OpenBLAS OpenMP), same threads, run one after the other
# on the same machine. Prints both JSON lines and the ratio of the medians over epochs.
#   bench/compare-training.sh [EPOCHS=3] [THREADS=2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EPOCHS="${1:-3}"
THREADS="${2:-2}"
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
BENCH="${BUILD_DIR:-${ROOT}/build}/bench/vae-bench"
echo "libblas.so.3 -> $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)" >&2
cpp=$("${BENCH}" train --data_dir="${DATA_DIR}" --dataset=mnist --preset=mnist --epochs="${EPOCHS}" \
  --batch_size=128 --threads="${THREADS}" --json | tail -n 1)
py=$(/usr/bin/python3 "${ROOT}/bench/torch_train.py" --data_dir="${DATA_DIR}" --epochs="${EPOCHS}" \
  --threads="${THREADS}" | tail -n 1)
echo "vae-bench:      ${cpp}"
echo "torch_train.py: ${py}"
/usr/bin/python3 - "${cpp}" "${py}" <<'PY'
import json, sys
cpp, py = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"images/s median: C++ {cpp['images_per_sec_median']:.0f}, PyTorch {py['images_per_sec_median']:.0f}, "
      f"ratio {cpp['images_per_sec_median'] / py['images_per_sec_median']:.2f}")
# On a shared VM, other tenants slow some epochs down; the fastest epoch is the least disturbed measurement.
print(f"images/s best epoch: C++ {max(cpp['images_per_sec']):.0f}, PyTorch {max(py['images_per_sec']):.0f}, "
      f"ratio {max(cpp['images_per_sec']) / max(py['images_per_sec']):.2f}")
PY
