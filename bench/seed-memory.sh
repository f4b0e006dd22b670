#!/usr/bin/env bash
# Peak RSS and training speed of the seed preset (BENCHMARKS.md §14): vae-train-memory from one or more builds, run
# one after the other in each of ROUNDS rounds, so that the figures of the builds are measured side by side.
#   bench/seed-memory.sh ROUNDS BUILD_DIR [BUILD_DIR...]      e.g. bench/seed-memory.sh 2 /tmp/base/build build
# Each run: 256 synthetic 3x218x178 PNGs, batch 32, 2 epochs (a checkpoint and a publication after each), 2 threads.
set -euo pipefail
rounds="${1:?usage: seed-memory.sh ROUNDS BUILD_DIR [BUILD_DIR...]}"
shift
for round in $(seq 1 "${rounds}"); do
  for build in "$@"; do
    out="$(nice "${build}/bench/vae-train-memory" --preset=seed --images=256 --batch_size=32 --epochs=2 --threads=2 \
      --work_dir="${TMPDIR:-/tmp}/vae-train-memory.$$" --json 2>/dev/null | tail -1)"
    python3 - "${round}" "${build}" "${out}" <<'PY'
import json, sys
r = json.loads(sys.argv[3])
ips = ", ".join(f"{x:.1f}" for x in r["epoch_images_per_sec"])
print(f"round {sys.argv[1]}  {sys.argv[2]:<28} peak {r['peak_rss_gb']:.2f} GB = {r['peak_over_weights']:.2f}x "
      f"the weights ({r['weights_gb']:.2f} GB)  images/s per epoch: {ips}  ({r['seconds']:.0f} s)")
PY
  done
done
