#!/usr/bin/env bash
# Configures and builds vae-service (Release) into BUILD_DIR (default: build/). Used by test.sh and demo.sh.
# Honours JOBS (default 2: a LibTorch translation unit needs ~1.4 GB and ~45 s) and extra CMake args in CMAKE_ARGS.
# With CI=true (as .ci/run runs in CI) warnings in the project's own code are errors (-DVAE_WERROR=ON).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-${ROOT}/build}"
JOBS="${JOBS:-2}"
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
# ccache keys on paths relative to the checkout, so a fresh clone in another folder (as CI makes) reuses the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-${ROOT}}"
werror=()
[ "${CI:-}" = true ] && werror=(-DVAE_WERROR=ON)
generator=()
command -v ninja >/dev/null 2>&1 && [ ! -f "${BUILD_DIR}/Makefile" ] && generator=(-G Ninja)
# shellcheck disable=SC2086
cmake -S "${ROOT}" -B "${BUILD_DIR}" "${generator[@]}" "${werror[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DVAE_TEST_DATA_DIR="${DATA_DIR}" ${CMAKE_ARGS:-} >/dev/null
cmake --build "${BUILD_DIR}" -j "${JOBS}"
