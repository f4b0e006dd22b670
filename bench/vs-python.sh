#!/usr/bin/env bash
# vae-server against the Python reference server (bench/python_server/server.py: grpcio + PyTorch, two processes on
# one SO_REUSEPORT port, each pinned to a core, 16 workers, 1 torch thread), both serving the same checkpoint on
# 127.0.0.1, driven by h2load with raw gRPC frames (nghttp2-client), ROUNDS interleaved rounds (each round measures
# every workload on vae-server, then on the Python server). Prints each workload's req/s per round, the medians and
# the ratio vae-server / Python.
#   bench/vs-python.sh [ROUNDS=3] [SECONDS=3]
# CHECKPOINT=path/ckpt-N.vae serves that checkpoint (an MLP with a Bernoulli likelihood); without it, a vae-server
# trains the mnist preset for one epoch on DATA_DIR's MNIST first and both serve the result.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-${ROOT}/build}"
ROUNDS="${1:-3}"
SECS="${2:-3}"
PY=/usr/bin/python3  # Debian's python3-torch and python3-grpcio
# shellcheck source=bench/h2load-lib.sh
source "${ROOT}/bench/h2load-lib.sh"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "${pid}" 2>/dev/null && wait "${pid}" 2>/dev/null || true; done
  rm -rf "${work}"
}
trap cleanup EXIT

free_port() { "${PY}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Stubs for the Python side.
h2load_stubs "${work}/gen"

# The checkpoint both serve.
mkdir -p "${work}/models"
if [[ -n "${CHECKPOINT:-}" ]]; then
  cp "${CHECKPOINT}" "${work}/models/ckpt-000000000001.vae"
else
  "${BUILD}/server/vae-server" --port=0 --model_dir="${work}/models" --data_dir="${DATA_DIR:-${ROOT}/data}" \
    >"${work}/train.log" 2>&1 &
  trainer=$!
  address="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/train.log" "${trainer}" 120)"
  "${BUILD}/client/vae-client" --server="${address}" train --dataset=mnist --epochs=1 >/dev/null
  kill -TERM "${trainer}" && wait "${trainer}" || true
fi
checkpoint="$(ls "${work}"/models/ckpt-*.vae | tail -n 1)"

# vae-server, defaults, on that checkpoint.
"${BUILD}/server/vae-server" --port=0 --model_dir="${work}/models" --data_dir="${work}" >"${work}/cpp.log" 2>&1 &
pids+=($!)
cpp_pid=$!
cpp="$(bash "${ROOT}/scripts/wait-for-server.sh" "${work}/cpp.log" "${cpp_pid}" 120)"
# The Python server.
py_port="$(free_port)"
"${PY}" "${ROOT}/bench/python_server/server.py" --port="${py_port}" --gen="${work}/gen" \
  --checkpoint="${checkpoint}" >"${work}/py.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do grep -q "listening" "${work}/py.log" && break; sleep 0.1; done
grep -q "listening" "${work}/py.log" || { cat "${work}/py.log" >&2; exit 1; }
python="127.0.0.1:${py_port}"

# Request bodies, for the model's shape.
h2load_requests "${work}/gen" "${cpp}" "${work}/req"

# Every body gets an OK answer from both servers before anything is timed (h2load sees HTTP 200 either way).
"${PY}" - "${work}/req" "${cpp}" "${python}" <<'PYEOF'
import sys, grpc
req, servers = sys.argv[1], sys.argv[2:]
for server in servers:
    channel = grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", 64 << 20)])
    for name, method in [("encode_b1", "Encode"), ("encode_b256", "Encode"), ("decode_b1", "Decode"),
                         ("sample64_png", "Sample")]:
        body = open(f"{req}/{name}", "rb").read()[5:]
        answer = channel.unary_unary(f"/vae.v1.VaeService/{method}")(body, timeout=30)
        print(f"check {server} {name}: OK, {len(answer)} bytes answered", file=sys.stderr)
PYEOF

# name | method | request file | connections
workloads=(
  "encode_b1_c1|Encode|encode_b1|1"
  "encode_b1_c32|Encode|encode_b1|32"
  "decode_b1_c32|Decode|decode_b1|32"
  "encode_b256_c8|Encode|encode_b256|8"
  "sample64_png_c8|Sample|sample64_png|8"
)

declare -A results
for round in $(seq "${ROUNDS}"); do
  for w in "${workloads[@]}"; do
    IFS='|' read -r name method body conns <<<"${w}"
    for side in cpp python; do
      address="${cpp}"
      [[ "${side}" == python ]] && address="${python}"
      read -r rps p50 _ < <(h2load_run "${address}" "${method}" "${work}/req/${body}" "${conns}" "${SECS}" \
        "${work}/${side}_${name}_${round}.log")
      results["${side}|${name}|${round}"]="${rps} ${p50}"
      echo "round ${round} ${name} ${side}: ${rps} req/s, p50 ${p50} us" >&2
    done
  done
done

printf "%-18s %28s %28s %12s\n" workload "vae-server req/s (p50 us)" "python req/s (p50 us)" "ratio"
for w in "${workloads[@]}"; do
  IFS='|' read -r name _ _ _ <<<"${w}"
  ratios=()
  for round in $(seq "${ROUNDS}"); do
    read -r c_rps _ <<<"${results["cpp|${name}|${round}"]}"
    read -r p_rps _ <<<"${results["python|${name}|${round}"]}"
    ratios+=("$(awk -v a="${c_rps}" -v b="${p_rps}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')")
  done
  c_med="$(for r in $(seq "${ROUNDS}"); do echo "${results["cpp|${name}|${r}"]% *}"; done | median)"
  p_med="$(for r in $(seq "${ROUNDS}"); do echo "${results["python|${name}|${r}"]% *}"; done | median)"
  c_p50="$(for r in $(seq "${ROUNDS}"); do echo "${results["cpp|${name}|${r}"]#* }"; done | median)"
  p_p50="$(for r in $(seq "${ROUNDS}"); do echo "${results["python|${name}|${r}"]#* }"; done | median)"
  ratio="$(printf "%s\n" "${ratios[@]}" | median)"
  printf "%-18s %18.0f (%7.0f) %18.0f (%7.0f) %8.2fx   rounds: %s\n" "${name}" "${c_med}" "${c_p50}" "${p_med}" \
    "${p_p50}" "${ratio}" "${ratios[*]}"
  [[ "${name}" == encode_b1_c1 ]] && printf "%-18s p50 ratio (python / vae-server): %.2fx\n" "" \
    "$(awk -v a="${p_p50}" -v b="${c_p50}" 'BEGIN { print (b > 0 ? a / b : 0) }')"
done
