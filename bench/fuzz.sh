#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, FUZZING.md) with clang-14, ASan and UBSan into FUZZ_BUILD_DIR (default
# build-fuzz/), replays every input that once crashed a target (fuzz/regressions/<target>/), then runs each for SECONDS, starting from a scratch copy of its seed corpus fuzz/corpus/<target>/ (the
# committed corpus is never changed). Prints one summary line per target; exits non-zero if any target crashed
# (a sanitizer report, a failed property, a timeout or running out of memory): the input that did it is saved
# under FUZZ_ARTIFACTS (default FUZZ_BUILD_DIR/artifacts/) and its name is printed.
#   bash bench/fuzz.sh SECONDS [TARGET...]      (default: every target; SECONDS 0: build and replay only)
# Honours JOBS (build parallelism, default 2) and FUZZ_FLAGS (extra libFuzzer flags).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: bench/fuzz.sh SECONDS [TARGET...]" >&2
  exit 2
fi
SECONDS_PER_TARGET="$1"
shift
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(fuzz_tensor_proto fuzz_image_decode fuzz_idx fuzz_checkpoint fuzz_options_json fuzz_service_requests)
fi
BUILD_DIR="${FUZZ_BUILD_DIR:-${ROOT}/build-fuzz}"
ARTIFACTS="${FUZZ_ARTIFACTS:-${BUILD_DIR}/artifacts}"
JOBS="${JOBS:-2}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-${ROOT}}"
# With -g, ccache hashes the build folder too (for the debug info's working directory): without this a fresh folder
# or clone would miss every object.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

generator=()
command -v ninja >/dev/null 2>&1 && [ ! -f "${BUILD_DIR}/Makefile" ] && generator=(-G Ninja)
# -O1 -g without NDEBUG: fast enough to fuzz, asserts on, readable stack traces.
CXX=clang++-14 cmake -S "${ROOT}" -B "${BUILD_DIR}" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DVAE_BUILD_FUZZERS=ON -DVAE_BUILD_TESTS=OFF -DVAE_BUILD_BENCH=OFF >/dev/null
start=$(date +%s)
cmake --build "${BUILD_DIR}" -j "${JOBS}" --target "${TARGETS[@]}"
echo "fuzz.sh: build took $(( $(date +%s) - start )) s"

mkdir -p "${ARTIFACTS}"
# Every sanitizer report is fatal and shows where it came from.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
failed=0
for target in "${TARGETS[@]}"; do
  mkdir -p "${work}/${target}"
  cp "${ROOT}/fuzz/corpus/${target}/"* "${work}/${target}/"
  log="${ARTIFACTS}/${target}.log"
  rc=0
  regressions=("${ROOT}/fuzz/regressions/${target}/"*)
  # VAE_FUZZ_TORCH_ARCHIVE: the past checkpoint crashes are inside torch archives (fuzz/fuzz_checkpoint.cc).
  if [ -e "${regressions[0]}" ] && ! VAE_FUZZ_TORCH_ARCHIVE=1 "${BUILD_DIR}/fuzz/${target}" "${regressions[@]}" >"${log}" 2>&1; then
    echo "fuzz.sh: ${target}: a past crash is back (fuzz/regressions/${target}/); log ${log}" >&2
    grep -E '^Running:|^SUMMARY|FUZZ_CHECK failed|runtime error' "${log}" >&2 || tail -20 "${log}" >&2
    failed=1
    continue
  fi
  [ "${SECONDS_PER_TARGET}" -eq 0 ] && continue
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: LibTorch + ASan shadow fit well under it.
  # shellcheck disable=SC2086
  "${BUILD_DIR}/fuzz/${target}" -max_total_time="${SECONDS_PER_TARGET}" -timeout=10 -rss_limit_mb=3072 \
    -print_final_stats=1 -artifact_prefix="${ARTIFACTS}/${target}-" ${FUZZ_FLAGS:-} "${work}/${target}" \
    >"${log}" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "${log}" | tail -1)
  seeds=$(ls "${ROOT}/fuzz/corpus/${target}" | wc -l)
  crashes=0
  if [ "${rc}" -ne 0 ]; then
    crashes=1
    failed=1
  fi
  echo "fuzz.sh: ${target}: ${SECONDS_PER_TARGET} s, ${execs:-0} execs, ${cov:-no coverage line} (from ${seeds} seeds), crashes ${crashes}"
  if [ "${rc}" -ne 0 ]; then
    echo "fuzz.sh: ${target} exited ${rc}; log ${log}; input:" >&2
    grep -E 'Test unit written to|^SUMMARY|FUZZ_CHECK failed|runtime error' "${log}" >&2 || tail -20 "${log}" >&2
  fi
done
exit "${failed}"
