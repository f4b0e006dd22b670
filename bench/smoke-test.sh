#!/usr/bin/env bash
# CTest smoke test of the benchmark tools (registered in bench/CMakeLists.txt): `vae-bench grpc` against a real
# vae-server through bench/grpc-bench.sh (the full grid, every point ~0.05 s), `vae-bench infer`, `vae-bench
# loopback` and bench/grpc-floor.sh; checks that each prints, as its last line, every JSON field BENCHMARKS.md quotes,
# well-formed: a finite number, >= 0. No speed is asserted, not even a positive one: on a loaded machine a 0.05 s
# point can end before any call of 64 clients x 256 images completes, and 0 images/s is then the right answer.
# Only what holds at any speed is checked: latency percentiles of calls that did complete are > 0 and p50 <= p99,
# a running server has a resident set > 0. Speed is what BENCHMARKS.md is for.
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
import json, math, sys
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
# Latency percentiles (of calls that completed) and the server's peak RSS are > 0 at any speed; other figures
# (rates, CPU per call, ratios of rates) are >= 0: a rate is 0 when no call completed in its window. A ratio whose
# denominator was such a 0 is inf or NaN, which JSON cannot hold: vae-bench's JSON writer prints null for it.
positive = ("_p50_us", "_p99_us", "p50_us", "p99_us", "_rss_mb")
ratios = ("c32_b1_encode_vs_info", "c8_b256_vs_inproc")
bad = []
def check(where, key, value):
    if value is None and key.startswith(ratios):
        return
    well_formed = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not well_formed or value < 0:
        bad.append(f"{where}: {key} = {value!r}, expected a finite number >= 0")
    elif key.endswith(positive) and value <= 0:
        bad.append(f"{where}: {key} = {value!r}, expected > 0 (a latency or a size)")
def percentiles_ordered(where, record, p50, p99):
    if all(isinstance(record.get(k), (int, float)) for k in (p50, p99)) and record[p50] > record[p99]:
        bad.append(f"{where}: {p50} = {record[p50]} > {p99} = {record[p99]}")
for mode, keys in expect.items():
    with open(f"{work}/{mode}.json") as f:
        out = json.load(f)
    if out.get("mode") != mode:
        bad.append(f"{mode}: mode is {out.get('mode')!r}")
    for k in keys:
        check(mode, k, out.get(k))
    for k in keys:
        if k.endswith("_p50_us"):
            percentiles_ordered(mode, out, k, k[:-len("_p50_us")] + "_p99_us")
    if mode == "grpc":
        rounds = out.get("c32_b1_encode_vs_info_rounds")
        if not isinstance(rounds, list) or len(rounds) != 2:
            bad.append(f"grpc: expected 2 rounds behind c32_b1_encode_vs_info, got {rounds!r}")
        else:
            for i, r in enumerate(rounds):
                check("grpc", f"c32_b1_encode_vs_info_rounds[{i}]", r)
with open(f"{work}/floor.jsonl") as f:
    floor = [json.loads(line) for line in f if line.strip()]
if sorted(r.get("api") for r in floor) != ["async", "callback"]:
    bad.append(f"grpc-floor: expected one callback and one async line, got {floor}")
for r in floor:
    for k in ("p50_us", "p99_us", "client_cpu_us_per_call", "server_cpu_us_per_call", "server_switches_per_call"):
        check(f"grpc-floor {r.get('api')}", k, r.get(k))
    percentiles_ordered(f"grpc-floor {r.get('api')}", r, "p50_us", "p99_us")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("bench smoke test: every figure present and well-formed")
PY
