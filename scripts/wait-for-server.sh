#!/usr/bin/env bash
# Waits until a vae-server started with --port=0 prints "vae-server listening on HOST:PORT" into its log, and prints
# HOST:PORT. Fails (showing the log) if the server exits first or does not serve within SECONDS.
#   ADDR=$(scripts/wait-for-server.sh LOG PID [SECONDS=30])
set -euo pipefail
LOG="$1"
PID="$2"
SECONDS_MAX="${3:-30}"
for _ in $(seq 1 $((SECONDS_MAX * 10))); do
  addr="$(sed -n 's/.*vae-server listening on \([^ ]*\).*/\1/p' "${LOG}" 2>/dev/null | head -n 1)"
  if [[ -n "${addr}" ]]; then
    echo "${addr}"
    exit 0
  fi
  kill -0 "${PID}" 2>/dev/null || { cat "${LOG}" >&2; echo "vae-server exited before it served" >&2; exit 1; }
  sleep 0.1
done
cat "${LOG}" >&2
echo "vae-server did not start within ${SECONDS_MAX} s" >&2
exit 1
