#!/usr/bin/env bash
# Training speed side by side: vae-bench (C++: the hand-written MLP step, and the same loop through autograd) and
# bench/torch_train.py (Python PyTorch, the same net, loss and data layout), same BLAS (libblas.so.3 -> OpenBLAS
# OpenMP), same threads. The three run one after the other, ROUNDS times; on a shared VM the neighbours change the
# speed of everything by up to +-30 % within minutes, so each round's ratio compares runs made seconds apart, and the
# summary is the median over rounds of those per-round ratios.
#   bench/compare-training.sh [EPOCHS=3] [THREADS=2] [ROUNDS=1]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EPOCHS="${1:-3}"
THREADS="${2:-2}"
ROUNDS="${3:-1}"
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
BENCH="${BUILD_DIR:-${ROOT}/build}/bench/vae-bench"
echo "libblas.so.3 -> $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)" >&2
# vae-bench train's JSON line; extra flags pass through.
cpp_train() {
  "${BENCH}" train --data_dir="${DATA_DIR}" --dataset=mnist --preset=mnist --epochs="${EPOCHS}" --batch_size=128 \
    --threads="${THREADS}" --json "$@" 2>/dev/null | tail -n 1
}
results=()
for ((round = 1; round <= ROUNDS; round++)); do
  fast=$(cpp_train)
  autograd=$(cpp_train --fast_mlp_step=false)
  py=$(/usr/bin/python3 "${ROOT}/bench/torch_train.py" --data_dir="${DATA_DIR}" --epochs="${EPOCHS}" \
    --threads="${THREADS}" | tail -n 1)
  results+=("${fast}" "${autograd}" "${py}")
done
/usr/bin/python3 - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
ratios, ratios_autograd = [], []
print("round  C++ hand-written step  C++ autograd  PyTorch  (images/s, median over epochs)  ratio  autograd ratio")
for i in range(0, len(runs), 3):
    fast, autograd, py = (r["images_per_sec_median"] for r in runs[i:i + 3])
    ratios.append(fast / py)
    ratios_autograd.append(autograd / py)
    print(f"{i // 3 + 1:5d}  {fast:21.0f}  {autograd:12.0f}  {py:7.0f}  {'':32s}  {fast / py:5.2f}  {autograd / py:14.2f}")
print(f"median ratio over {len(ratios)} round(s): hand-written step / PyTorch = {statistics.median(ratios):.2f}, "
      f"autograd / PyTorch = {statistics.median(ratios_autograd):.2f}")
print(f"test loss after the last epoch: hand-written {runs[0]['test_loss']:.3f}, autograd {runs[1]['test_loss']:.3f}, "
      f"PyTorch {runs[2]['test_loss']:.3f}")
PY
