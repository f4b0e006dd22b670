# Sourced by bench/vs-python.sh and bench/serve-while-training.sh: gRPC load from h2load (nghttp2-client) with raw
# gRPC frames, and the request bodies it sends.

# h2load_stubs DIR: generates the vae.v1 Python stubs into DIR (Debian's protoc + grpc_python_plugin).
h2load_stubs() {
  mkdir -p "$1"
  protoc -I "${ROOT}/proto" --python_out="$1" --grpc_out="$1" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin "${ROOT}/proto/vae/v1/vae_service.proto"
}

# h2load_requests GEN SERVER OUT: writes the request bodies (bench/python_server/make_requests.py) for the model that
# SERVER (HOST:PORT) serves into OUT.
h2load_requests() {
  local shape latent
  read -r shape latent < <(/usr/bin/python3 - "$1" "$2" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import grpc
from vae.v1 import vae_service_pb2 as pb, vae_service_pb2_grpc as pb_grpc
info = pb_grpc.VaeServiceStub(grpc.insecure_channel(sys.argv[2])).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
print(",".join(map(str, info.input_shape)), info.latent_dim)
PYEOF
  )
  mkdir -p "$3"
  /usr/bin/python3 "${ROOT}/bench/python_server/make_requests.py" --gen="$1" --out="$3" --shape="${shape}" \
    --latent_dim="${latent}"
}

# h2load_run ADDRESS METHOD BODY_FILE CONNECTIONS SECONDS LOG: a closed loop of CONNECTIONS connections, one call in
# flight each, for SECONDS after 1 s of warm-up. Prints "req/s p50_us p99_us" (percentiles from h2load's per-request
# log).
h2load_run() {
  h2load -n 100000000 -D "$5" --warm-up-time=1 -c "$4" -m 1 -t 1 -d "$3" \
    -H "content-type: application/grpc" -H "te: trailers" --log-file="$6" \
    "http://$1/vae.v1.VaeService/$2" >"$6.out" 2>&1 || true
  local rps pct
  rps="$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) { v = $(i - 1); gsub(",", "", v); print v } }' "$6.out")"
  pct="$(awk -F'\t' '$2 == 200 { print $3 }' "$6" 2>/dev/null | sort -n |
    awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; if (NR) print v[int((NR + 1) / 2)], v[i]; else print 0, 0 }')"
  echo "${rps:-0} ${pct}"
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
