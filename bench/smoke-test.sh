#!/usr/bin/env bash
# CTest smoke test of the benchmark tools (registered in bench/CMakeLists.txt): `vae-bench grpc` against a real
# vae-server through bench/grpc-bench.sh (the full grid, every point ~0.05 s), `vae-bench infer`, `vae-bench
# loopback` and bench/grpc-floor.sh; checks that each prints, as its last line, the JSON fields BENCHMARKS.md quotes, with positive values.
# Speed is not asserted here: that is what BENCHMARKS.md is for.
#   bench/smoke-test.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$1"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

BUILD_DIR="${BUILD}" BENCH_ARGS="--latency_calls=50 --ratio_rounds=2" bash "${ROOT}/bench/grpc-bench.sh" 0.05 \
  >"${work}/grpc.json"
"${BUILD}/bench/vae-bench" infer --preset=mnist --threads=2 --seconds=0.05 --json 2>/dev/null | tail -n 1 \
  >"${work}/infer.json"
"${BUILD}/bench/vae-bench" loopback --latency_calls=200 --json 2>/dev/null | tail -n 1 >"${work}/loopback.json"
BUILD_DIR="${BUILD}" bash "${ROOT}/bench/grpc-floor.sh" 1 200 >"${work}/floor.jsonl"

python3 - "${work}" <<'PY'
import json, sys
work = sys.argv[1]
expect = {
    "grpc": ["encode_b1_p50_us", "encode_b1_p99_us", "encode_b1_client_cpu_us", "encode_b1_server_cpu_us",
             "info_b1_p50_us", "info_b1_server_cpu_us", "info_c32_calls_per_sec", "c32_b1_encode_vs_info",
             "c8_b256_vs_inproc", "inproc_encode_b256_images_per_sec", "server_peak_rss_mb"]
            + [f"encode_c{c}_b{b}_images_per_sec" for c in (1, 8, 32, 64) for b in (1, 256)],
    "infer": [f"{op}_b{b}_images_per_sec" for op in ("encode", "decode") for b in (1, 64, 256, 1024)],
    "loopback": ["tcp_rtt_any_cpu_p50_us", "tcp_rtt_any_cpu_p99_us", "tcp_rtt_one_cpu_p50_us",
                 "tcp_rtt_one_cpu_p99_us"],
}
bad = []
for mode, keys in expect.items():
    with open(f"{work}/{mode}.json") as f:
        out = json.load(f)
    if out.get("mode") != mode:
        bad.append(f"{mode}: mode is {out.get('mode')!r}")
    for k in keys:
        v = out.get(k)
        if not isinstance(v, (int, float)) or not v > 0:
            bad.append(f"{mode}: {k} = {v!r}, expected a positive number")
    if mode == "grpc" and len(out.get("c32_b1_encode_vs_info_rounds", [])) != 2:
        bad.append("grpc: expected 2 rounds behind c32_b1_encode_vs_info")
with open(f"{work}/floor.jsonl") as f:
    floor = [json.loads(line) for line in f if line.strip()]
if sorted(r.get("api") for r in floor) != ["async", "callback"]:
    bad.append(f"grpc-floor: expected one callback and one async line, got {floor}")
for r in floor:
    for k in ("p50_us", "p99_us", "client_cpu_us_per_call", "server_cpu_us_per_call", "server_switches_per_call"):
        if not isinstance(r.get(k), (int, float)) or not r[k] > 0:
            bad.append(f"grpc-floor {r.get('api')}: {k} = {r.get(k)!r}, expected a positive number")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("bench smoke test: all fields present and positive")
PY
