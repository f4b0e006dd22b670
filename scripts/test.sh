#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs the packages, fetches the real datasets,
# builds, runs every test with CTest, runs each fuzz target for 30 s (bench/fuzz.sh; set VAE_FUZZ_SECONDS to change
# it, 0 to leave fuzzing out), then proves the docker-compose deployment (docker/test.sh; set
# VAE_SKIP_DOCKER_TEST=1 to leave that out on a machine that cannot run dockerd). `.ci/run` calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATA_DIR="${DATA_DIR:-${ROOT}/data}"
export BUILD_DIR="${BUILD_DIR:-${ROOT}/build}"

bash "${ROOT}/scripts/install-deps.sh"
bash "${ROOT}/scripts/fetch-data.sh" "${DATA_DIR}"
bash "${ROOT}/scripts/build.sh"
bash "${ROOT}/scripts/format.sh" --check
# Tests use 2 torch threads each; run them one at a time so timings inside (e.g. deadlines) are not starved.
ctest --test-dir "${BUILD_DIR}" --output-on-failure --timeout 900 -j "${CTEST_JOBS:-1}"
# The libFuzzer targets under ASan+UBSan (their own clang build in build-fuzz/): past crashes replayed, then fuzzed.
if [ "${VAE_FUZZ_SECONDS:-30}" != "0" ]; then
  bash "${ROOT}/bench/fuzz.sh" "${VAE_FUZZ_SECONDS:-30}"
fi
if [ "${VAE_SKIP_DOCKER_TEST:-0}" != "1" ]; then
  bash "${ROOT}/docker/test.sh"
fi
