#!/usr/bin/env bash
# tests/integration/openmp_wait_policy_test.sh VAE_SERVER WAIT_FOR_SERVER: vae-server runs with OMP_WAIT_POLICY=PASSIVE
# when the environment does not set it (server/main.cc re-executes itself with it: libgomp reads it only at load),
# and keeps a value the environment sets. Read from the serving process's /proc/PID/environ.
set -uo pipefail
server="$1"
wait_for="$2"
work="$(mktemp -d)"
pid=""
trap '[[ -n "${pid}" ]] && kill -TERM "${pid}" 2>/dev/null && wait "${pid}" 2>/dev/null; rm -rf "${work}"' EXIT
failed=0
check() {  # check EXPECTED [VAR=VALUE]: starts the server (with VAR=VALUE in its environment), reads its policy
  local expected="$1"
  shift
  env -u OMP_WAIT_POLICY "$@" "${server}" --port=0 --model_dir="${work}/models" --data_dir="${work}" \
    >"${work}/log" 2>&1 &
  pid=$!
  bash "${wait_for}" "${work}/log" "${pid}" 120 >/dev/null || { failed=1; return; }
  local got
  got="$(tr '\0' '\n' <"/proc/${pid}/environ" | sed -n 's/^OMP_WAIT_POLICY=//p')"
  if [[ "${got}" != "${expected}" ]]; then
    echo "FAIL: with ${*:-no OMP_WAIT_POLICY} the server runs with OMP_WAIT_POLICY='${got}', expected '${expected}'"
    failed=1
  else
    echo "ok: with ${*:-no OMP_WAIT_POLICY} the server runs with OMP_WAIT_POLICY=${got}"
  fi
  kill -TERM "${pid}" && wait "${pid}"
  pid=""
}
check PASSIVE
check ACTIVE OMP_WAIT_POLICY=ACTIVE
exit "${failed}"
