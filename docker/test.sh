#!/usr/bin/env bash
# End-to-end test of the docker-compose deployment (docker/Dockerfile, docker/docker-compose.yml), as root, on a
# Debian 12 machine that reaches Debian's package mirror but no image registry:
#   1. installs docker.io, docker-compose (v1) and mmdebstrap when missing; fetches the datasets (scripts/fetch-data.sh)
#   2. starts its own dockerd (no init system needed): persistent data-root DOCKER_DATA_ROOT, so the image layers and
#      the BuildKit caches (apt, ccache) are reused by the next run; socket and exec-root in /tmp/vae-dockerd
#   3. makes debian:bookworm-slim from the Debian mirror with mmdebstrap | docker import (once per data-root)
#   4. builds the image (BuildKit, --network host); `docker-compose up -d`; waits for the healthcheck
#   5. with the host's vae-client against the published port: trains 1 epoch of MNIST and samples a PNG grid; notes
#      the version it published and encodes 16 test digits pinned to it (--version), as .json and .npy
#   5b. the HTTP port (published on 127.0.0.1): /healthz, /readyz, /metrics counting that Train; then the
#      `monitoring` profile (Debian's Prometheus, docker/prometheus.Dockerfile): its HTTP API must report
#      vae-server's Train counter as 1
#   6. restarts the container: the model trained in 5 must still be served (named volume), bit for bit, and the
#      pinned version must encode the same digits to byte-identical .json and .npy files
#   7. runs the one-shot client service (profile `client`): trains 1 epoch, writes samples.png to a bind mount; the
#      pinned version still encodes byte-identical files while `latest` (the new version) encodes other codes, and
#      `decode` of the stored codes uses their own version and refuses another one
#   8. stops the server (SIGTERM: it must exit 0); `docker-compose down -v`; stops dockerd by PID and unmounts
#      what it leaves under its exec-root
# A trap does step 8 (and shows the logs) on any failure. Prints the time of each phase. Exit 0 only if all passed.
#
# Environment (all optional):
#   BUILD_DIR          host build tree holding client/vae-client        default build/ (without it: the image's client)
#   DATA_DIR           datasets, mounted read-only into the container   default data/
#   VAE_PORT           host port to publish on 127.0.0.1                 default: a free one
#   VAE_HTTP_PORT, VAE_PROMETHEUS_PORT   the HTTP port's and Prometheus' host ports     default: free ones
#   DOCKER_DATA_ROOT, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, VAE_REFRESH_BASE=1 (also: rebuild without the layer
#                      cache), VAE_DOCKER_KEEP_STORAGE, VAE_DOCKER_LOCK_WAIT_S: see docker/lib.sh (shared by the docker
#                      test scripts: one dockerd data-root, whose lock makes a second script wait for the first)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly BUILD_DIR="${BUILD_DIR:-${ROOT}/build}"
readonly DATA_DIR="${DATA_DIR:-${ROOT}/data}"
readonly IMAGE="vae-service:latest"
readonly BASE_IMAGE="debian:bookworm-slim"
readonly PROJECT="vae-test"  # compose project: container, network and volume names start with it
readonly COMPOSE_FILE="${ROOT}/docker/docker-compose.yml"
readonly IMAGE_UID=10001     # the image's user `vae`

VAE_SCRIPT=docker/test.sh
# shellcheck source=docker/lib.sh
. "${ROOT}/docker/lib.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts dockerd)"

# --- cleanup: runs on every exit --------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vae-docker-test.XXXXXX")"
COMPOSE_UP=0
export DOCKER_CONFIG="${WORK}/docker-config"  # no credential helpers or contexts from ~/.docker

dc() { docker-compose --ansi never -p "${PROJECT}" -f "${COMPOSE_FILE}" "$@"; }

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "${DOCKERD_PID}" ] && kill -0 "${DOCKERD_PID}" 2>/dev/null; then
    if [ "${COMPOSE_UP}" -eq 1 ]; then
      if [ "${rc}" -ne 0 ]; then
        echo "----- docker-compose ps / logs (last 80 lines) -----"
        dc --profile client ps
        dc --profile client logs --no-color --tail=80
      fi
      log "docker-compose down -v"
      timeout 120 docker-compose --ansi never -p "${PROJECT}" -f "${COMPOSE_FILE}" --profile client \
        --profile monitoring down -v --remove-orphans --timeout 20 >/dev/null 2>&1
    fi
    prune_docker
  fi
  if [ "${rc}" -ne 0 ] && [ -f "${WORK}/dockerd.log" ]; then
    echo "----- dockerd log (last 30 lines) -----"
    tail -n 30 "${WORK}/dockerd.log"
  fi
  if [ -n "${DOCKERD_PID}" ]; then
    log "stopping dockerd (pid ${DOCKERD_PID})"
    stop_dockerd "${DOCKERD_PID}"
  fi
  rm -rf "${WORK}"
  phase ""
  print_timings
  if [ "${rc}" -eq 0 ]; then log "PASSED"; else log "FAILED (exit ${rc})"; fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'echo "docker/test.sh: FAILED at line ${LINENO}: ${BASH_COMMAND}" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. packages and data ---------------------------------------------------------------------------------------
phase "packages and data"
need_packages docker.io docker-compose mmdebstrap python3 curl
"${DOCKER}" --version
docker-compose --version
bash "${ROOT}/scripts/fetch-data.sh" "${DATA_DIR}" | tail -n 1

# vae-client on the host (built by scripts/build.sh), else the one in the image through `docker exec`.
HOST_CLIENT="${BUILD_DIR}/client/vae-client"
if [ -x "${HOST_CLIENT}" ]; then
  log "client: ${HOST_CLIENT}"
else
  log "client: ${HOST_CLIENT} is missing; using the image's vae-client through docker exec"
  HOST_CLIENT=""
fi

# --- 2. dockerd -------------------------------------------------------------------------------------------------
phase "start dockerd"
mkdir -p "${DOCKER_CONFIG}"
start_dockerd "${WORK}/dockerd.log"

# --- 3. base image ----------------------------------------------------------------------------------------------
phase "base image"
make_base_image bookworm "${BASE_IMAGE}"

# --- 4. build and start -----------------------------------------------------------------------------------------
phase "docker build"
build_args=()
[ "${VAE_REFRESH_BASE:-0}" = 1 ] && build_args+=(--no-cache)
# --network host: the build reaches the mirror even where dockerd runs with --bridge=none.
set +e
timeout 2400 "${DOCKER}" build --network host --progress=plain "${build_args[@]}" -f "${ROOT}/docker/Dockerfile" \
  -t "${IMAGE}" "${ROOT}" 2>&1 | tee "${WORK}/build.log"
build_rc=${PIPESTATUS[0]}
set -e
[ "${build_rc}" -eq 0 ] || die "docker build failed with status ${build_rc} (log above)"
log "image ${IMAGE}: $("${DOCKER}" image inspect -f '{{.Size}}' "${IMAGE}" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
VAE_PORT="${VAE_PORT:-$(free_port)}"
VAE_HTTP_PORT="${VAE_HTTP_PORT:-$(free_port)}"
VAE_PROMETHEUS_PORT="${VAE_PROMETHEUS_PORT:-$(free_port)}"
export VAE_HTTP_PORT VAE_PROMETHEUS_PORT VAE_PROMETHEUS_IMAGE=vae-prometheus:latest
export VAE_PORT VAE_IMAGE="${IMAGE}" VAE_DATA_DIR="${DATA_DIR}" VAE_OUT_DIR="${WORK}/compose-out"
export VAE_UID="${IMAGE_UID}" VAE_GID="${IMAGE_UID}" VAE_EPOCHS=1
mkdir -p "${WORK}/out" "${VAE_OUT_DIR}"
chown "${IMAGE_UID}:${IMAGE_UID}" "${VAE_OUT_DIR}"

phase "compose up, healthy"
COMPOSE_UP=1
dc up -d --no-build vae-server
CID="$(dc ps -q vae-server)"
[ -n "${CID}" ] || die "docker-compose up started no vae-server container"

# Waits until the container's healthcheck has passed since its latest start (up to $1 seconds).
wait_healthy() {
  local limit="$1" i state
  for ((i = 0; i < limit; i++)); do
    state="$("${DOCKER}" inspect "${CID}" 2>/dev/null | python3 -c '
import datetime, json, re, sys
c = json.load(sys.stdin)[0]["State"]
def t(s):  # RFC 3339 with nanoseconds -> datetime (microseconds)
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-].*)$", s)
    return datetime.datetime.fromisoformat(m.group(1) + (m.group(2) or ".0")[:7].ljust(7, "0") +
                                           ("+00:00" if m.group(3) == "Z" else m.group(3)))
h = c.get("Health") or {}
log = [e for e in h.get("Log") or [] if t(e["Start"]) >= t(c["StartedAt"])]
ok = c["Status"] == "running" and h.get("Status") == "healthy" and log and log[-1]["ExitCode"] == 0
print("healthy" if ok else "%s/%s" % (c["Status"], h.get("Status")))
' 2>&1 || true)"
    [ "${state}" = healthy ] && { log "vae-server healthy after ${i} s"; return 0; }
    sleep 1
  done
  die "vae-server not healthy within ${limit} s (state ${state})"
}
wait_healthy 180

# The deployment's promises: published on 127.0.0.1 only, a non-root server, the data read-only.
published="$("${DOCKER}" port "${CID}" 50051/tcp)"
[ "${published}" = "127.0.0.1:${VAE_PORT}" ] || die "port 50051 is published on '${published}', expected 127.0.0.1:${VAE_PORT}"
user="$("${DOCKER}" exec "${CID}" id -u)"
[ "${user}" = "${IMAGE_UID}" ] || die "vae-server runs as uid ${user}, expected ${IMAGE_UID}"
data_rw="$("${DOCKER}" inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.RW}}{{end}}{{end}}' "${CID}")"
[ "${data_rw}" = false ] || die "/data is mounted read-write ('${data_rw}'), expected read-only"
log "published on ${published}, runs as uid ${user}, /data read-only"

# vae-client against the deployment: the host's through the published port, or the image's inside the container
# (then --output files are written in the container's /tmp and copied out).
client() {
  if [ -n "${HOST_CLIENT}" ]; then
    "${HOST_CLIENT}" --server="127.0.0.1:${VAE_PORT}" "$@"
  else
    "${DOCKER}" exec "${CID}" vae-client "$@"
  fi
}
sample_png() {  # sample_png DEST: 64 samples with seed 1 as one PNG grid
  if [ -n "${HOST_CLIENT}" ]; then
    client sample --count=64 --seed=1 --output="$1"
  else
    client sample --count=64 --seed=1 --output=/tmp/samples.png && "${DOCKER}" cp "${CID}:/tmp/samples.png" "$1"
  fi
}
# Checks that $1 is a PNG whose IHDR holds a grid of 8 x 8 cells of 28 x 28 pixels (plus borders).
check_png() {
  python3 - "$1" <<'EOF' || die "$1 is not the expected PNG grid"
import struct, sys
data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
    sys.exit(f"{sys.argv[1]}: not a PNG file (starts with {data[:16]!r})")
width, height = struct.unpack(">II", data[16:24])
if not (8 * 28 <= width <= 8 * 36 and 8 * 28 <= height <= 8 * 36):
    sys.exit(f"{sys.argv[1]}: {width}x{height} pixels, expected a grid of 8x8 images of 28x28 (224..288 pixels)")
print(f"{sys.argv[1]}: PNG {width}x{height}, {len(data)} bytes")
EOF
}
# encode_pinned DEST.(json|npy) FLAGS...: the first 16 MNIST test digits encoded with FLAGS (e.g. --version=N);
# an .npy also brings DEST_sigma.npy and DEST_version.json.
encode_pinned() {
  local dest="$1"
  shift
  if [ -n "${HOST_CLIENT}" ]; then
    client encode "${DATA_DIR}/mnist/t10k-images-idx3-ubyte" --limit=16 --output="${dest}" "$@" >/dev/null
  else
    local name
    name="$(basename "${dest}")"
    client encode /data/mnist/t10k-images-idx3-ubyte --limit=16 --output="/tmp/${name}" "$@" >/dev/null
    "${DOCKER}" cp "${CID}:/tmp/${name}" "${dest}"
    if [[ "${name}" == *.npy ]]; then
      "${DOCKER}" cp "${CID}:/tmp/${name%.npy}_sigma.npy" "${dest%.npy}_sigma.npy"
      "${DOCKER}" cp "${CID}:/tmp/${name%.npy}_version.json" "${dest%.npy}_version.json"
    fi
  fi
}
# Prints "MODEL VERSION" of `vae-client info --json` on stdin: the version the default label names now.
served_version() {
  python3 -c '
import json, sys
info = json.load(sys.stdin)
model, version = info.get("model", ""), info.get("version", {}).get("version", 0)
if not model or not isinstance(version, int) or version < 1:
    sys.exit("info --json names no model version: " + json.dumps(info)[:400])
print(model, version)
'
}
# Prints "MODEL VERSION" stored in the encode output $1 (.json, or the _version.json beside an .npy).
stored_version() {
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))["version"]; print(v["model"], v["version"])' "$1"
}
# Prints the "mu" rows of the encode output $1 (.json), for comparing codes whatever else the files hold.
mu_of() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["mu"])' "$1"
}

# Prints "epochs_trained global_step" from `vae-client info --json` on stdin (wherever the keys are nested).
model_version() {
  python3 -c '
import json, sys
info = json.load(sys.stdin)
found = {}
def walk(x):
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("epochs_trained", "global_step") and not isinstance(v, (dict, list)):
                found.setdefault(k, int(v))
            walk(v)
    elif isinstance(x, list):
        for v in x:
            walk(v)
walk(info)
if len(found) != 2:
    sys.exit("info --json has no epochs_trained / global_step: " + json.dumps(info)[:400])
print(found["epochs_trained"], found["global_step"])
'
}

# --- 5. train and sample ----------------------------------------------------------------------------------------
phase "train 1 epoch, sample"
[ "$(client health)" = SERVING ] || die "vae-client health did not print SERVING"
client train --dataset=mnist --epochs=1 --batch_size=128 --lr=0.001 --seed=1 | tail -n 3
sample_png "${WORK}/out/before-restart.png"
check_png "${WORK}/out/before-restart.png"
read -r epochs steps < <(client info --json | model_version)
if ! { [ "${epochs}" -ge 1 ] && [ "${steps}" -gt 0 ]; }; then
  die "after training: epochs_trained=${epochs} global_step=${steps}"
fi
log "served after training: epochs_trained=${epochs} global_step=${steps}"
# The version that training published: pin it, and keep codes of it as a caller storing latent codes would.
read -r pin_model pin_version < <(client info --json | served_version)
[ -n "${pin_version:-}" ] || die "vae-client info --json named no model version after training"
encode_pinned "${WORK}/out/pinned-before.json" --model="${pin_model}" --version="${pin_version}"
encode_pinned "${WORK}/out/pinned-before.npy" --model="${pin_model}" --version="${pin_version}"
for f in pinned-before.json pinned-before_version.json; do
  [ "$(stored_version "${WORK}/out/${f}")" = "${pin_model} ${pin_version}" ] ||
    die "${f} stores version '$(stored_version "${WORK}/out/${f}")', expected '${pin_model} ${pin_version}'"
done
log "pinned ${pin_model} version ${pin_version}: encoded 16 digits to .json and .npy"

# --- 5b. the HTTP port and the monitoring profile -----------------------------------------------------------------
phase "HTTP port, Prometheus"
published_http="$("${DOCKER}" port "${CID}" 8080/tcp)"
[ "${published_http}" = "127.0.0.1:${VAE_HTTP_PORT}" ] ||
  die "port 8080 is published on '${published_http}', expected 127.0.0.1:${VAE_HTTP_PORT}"
http="http://127.0.0.1:${VAE_HTTP_PORT}"
[ "$(curl -fsS "${http}/healthz")" = ok ] || die "GET /healthz did not answer ok"
[ "$(curl -fsS "${http}/readyz")" = ready ] || die "GET /readyz did not answer ready"
curl -fsS "${http}/metrics" >"${WORK}/metrics.txt" || die "GET /metrics failed"
# The one Train call of step 5, counted once.
grep -qx 'vae_grpc_requests_total{method="Train",code="OK"} 1' "${WORK}/metrics.txt" ||
  die "/metrics does not count the Train call: $(grep vae_grpc_requests_total "${WORK}/metrics.txt")"
log "/healthz ok, /readyz ready, /metrics: $(grep -c '^vae_' "${WORK}/metrics.txt") vae_ samples"
timeout 1200 "${DOCKER}" build --network host --progress=plain -f "${ROOT}/docker/prometheus.Dockerfile" \
  -t "${VAE_PROMETHEUS_IMAGE}" "${ROOT}/docker" >"${WORK}/prometheus-build.log" 2>&1 ||
  { tail -n 30 "${WORK}/prometheus-build.log"; die "docker build of the Prometheus image failed"; }
dc --profile monitoring up -d --no-build prometheus
# Prometheus scrapes every 5 s: ask its HTTP API until vae-server's Train counter is there.
query='vae_grpc_requests_total{job="vae-server",method="Train",code="OK"}'
value=""
for ((i = 0; i < 120; i++)); do
  value="$(curl -fsS --get --data-urlencode "query=${query}" \
      "http://127.0.0.1:${VAE_PROMETHEUS_PORT}/api/v1/query" 2>/dev/null |
    python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
      2>/dev/null || true)"
  [ "${value}" = 1 ] && break
  sleep 1
done
[ "${value}" = 1 ] || die "Prometheus' /api/v1/query?query=${query} gave '${value}' after ${i} s, expected 1"
log "Prometheus (127.0.0.1:${VAE_PROMETHEUS_PORT}) reports ${query} = ${value} after ${i} s"

# --- 6. restart: the trained model comes back from the named volume ---------------------------------------------
phase "restart, model persisted"
dc restart vae-server
wait_healthy 180
read -r epochs2 steps2 < <(client info --json | model_version)
[ "${epochs2} ${steps2}" = "${epochs} ${steps}" ] ||
  die "after restart the server has epochs_trained=${epochs2} global_step=${steps2}, expected ${epochs} / ${steps}"
sample_png "${WORK}/out/after-restart.png"
# The same seed and the same weights give bitwise the same images.
cmp -s "${WORK}/out/before-restart.png" "${WORK}/out/after-restart.png" ||
  die "samples with seed 1 differ before and after the restart: the weights were not restored"
log "after restart: epochs_trained=${epochs2} global_step=${steps2}, identical samples"
# The pinned version, after the restart: bitwise the same codes (JSON floats print back bitwise; .npy is raw bytes).
encode_pinned "${WORK}/out/pinned-restart.json" --model="${pin_model}" --version="${pin_version}"
encode_pinned "${WORK}/out/pinned-restart.npy" --model="${pin_model}" --version="${pin_version}"
for f in pinned-restart.json pinned-restart.npy pinned-restart_sigma.npy; do
  cmp -s "${WORK}/out/${f/restart/before}" "${WORK}/out/${f}" ||
    die "${f}: ${pin_model} version ${pin_version} encodes the digits differently after the restart"
done
log "after restart: ${pin_model} version ${pin_version} encodes byte-identical .json and .npy files"

# --- 7. the one-shot client service -----------------------------------------------------------------------------
phase "compose client service"
# --resume: continue version 1. (A fresh job with the same seed, data and epochs would publish bitwise the same
# weights as version 1 — training is deterministic — and `latest` could not be told from the pin.)
VAE_TRAIN_ARGS=--resume dc --profile client run --rm -T vae-client | tail -n 4
check_png "${VAE_OUT_DIR}/samples.png"
read -r epochs3 steps3 < <(model_version < "${VAE_OUT_DIR}/model-info.json")
if ! { [ "${epochs3}" -ge 1 ] && [ "${steps3}" -gt 0 ]; }; then
  die "model-info.json: epochs_trained=${epochs3} global_step=${steps3}"
fi
log "client service: ${VAE_OUT_DIR}/samples.png, model epochs_trained=${epochs3} global_step=${steps3}"
# The client service published a newer version: `latest` moved, the pin did not.
read -r latest_model latest_version < <(client info --json | served_version)
[ -n "${latest_version:-}" ] || die "vae-client info --json named no model version after the client service"
{ [ "${latest_model}" = "${pin_model}" ] && [ "${latest_version}" -gt "${pin_version}" ]; } ||
  die "after more training the default label names ${latest_model} version ${latest_version}, expected a later version of ${pin_model} than ${pin_version}"
encode_pinned "${WORK}/out/pinned-later.json" --model="${pin_model}" --version="${pin_version}"
cmp -s "${WORK}/out/pinned-before.json" "${WORK}/out/pinned-later.json" ||
  die "${pin_model} version ${pin_version} encodes differently after version ${latest_version} was trained"
encode_pinned "${WORK}/out/latest.json" --label=latest
[ "$(mu_of "${WORK}/out/pinned-before.json")" != "$(mu_of "${WORK}/out/latest.json")" ] ||
  die "latest (version ${latest_version}) encodes the same mu as version ${pin_version}"
client models | tee "${WORK}/out/models.txt"
grep -Eq "^${pin_model} +${pin_version} " "${WORK}/out/models.txt" ||
  die "vae-client models lists no row for ${pin_model} version ${pin_version}"
if [ -n "${HOST_CLIENT}" ]; then
  # Stored codes decode with their own version; naming another one is refused (exit 2) unless --force.
  client decode --input="${WORK}/out/pinned-before.json" --output="${WORK}/out/decoded.png" >/dev/null
  refused_rc=0
  client decode --input="${WORK}/out/pinned-before.json" --output="${WORK}/out/refused.png" --label=latest \
    2>"${WORK}/out/refused.txt" || refused_rc=$?
  [ "${refused_rc}" -eq 2 ] ||
    die "decode of version ${pin_version} codes with --label=latest exited ${refused_rc}, expected 2"
fi
log "after version ${latest_version}: ${pin_model} version ${pin_version} still encodes byte-identical codes, latest others"

# --- 8. SIGTERM, down -v (the trap stops dockerd) ---------------------------------------------------------------
phase "graceful stop, down -v"
dc stop --timeout 30 vae-server
code="$("${DOCKER}" inspect -f '{{.State.ExitCode}}' "${CID}")"
[ "${code}" = 0 ] || die "vae-server exited with status ${code} on SIGTERM, expected 0 (graceful shutdown)"
"${DOCKER}" logs --tail 1 "${CID}" 2>&1
dc --profile client --profile monitoring down -v --remove-orphans --timeout 20
COMPOSE_UP=0
if "${DOCKER}" volume ls -q | grep -q "^${PROJECT}_"; then die "down -v left volumes: $("${DOCKER}" volume ls -q)"; fi
phase "stop dockerd, clean up"
