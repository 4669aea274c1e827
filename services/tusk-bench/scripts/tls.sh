#!/usr/bin/env bash
# What TLS costs: one upload of SIZE in one PATCH (curl over loopback, HTTP/1.1) to a node
# serving plain HTTP and to one serving TLS (tls12 mode; curl negotiates TLS 1.3 with
# AES-GCM), alternately, REPEAT rounds each on a fresh data directory. Prints each run's
# throughput and the server's CPU time (user + system, from /proc), then the medians.
#
#   services/tusk-bench/scripts/tls.sh
#   SIZE_MIB=1024 REPEAT=3 TUSK=target/release/tusk   (defaults)
#
# Needs curl, openssl (the test certificate) and a release build: cargo build --release -p tusk.
set -euo pipefail
cd "$(dirname "$0")/../../.."
size_mib=${SIZE_MIB:-1024}
repeat=${REPEAT:-3}
tusk=$(realpath "${TUSK:-target/release/tusk}")
for tool in curl openssl; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install $tool" >&2; exit 1; }
done
work=$(mktemp -d /tmp/tusk-tlsbench.XXXXXX)
tusk_pid=
trap 'kill $tusk_pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
  -out cert.pem -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
head -c "$((size_mib << 20))" /dev/urandom >body.bin
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# one MODE PORT: prints "MiB/s cpu_seconds"
one() {
  local mode=$1 port=$2 scheme=http tls=()
  if [ "$mode" = tls ]; then scheme=https; tls=(-tls-certificate cert.pem -tls-key key.pem); fi
  rm -rf "data-$mode"
  "$tusk" -port "$port" -admin-port 0 -upload-dir "data-$mode" "${tls[@]}" >/dev/null 2>&1 &
  tusk_pid=$!
  for _ in $(seq 100); do curl -s --cacert cert.pem -o /dev/null "$scheme://localhost:$port/files/" && break; sleep 0.1; done
  local location
  location=$(curl -s --cacert cert.pem -i -X POST -H 'Tus-Resumable: 1.0.0' \
    -H "Upload-Length: $((size_mib << 20))" "$scheme://localhost:$port/files/" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "location" {print $2}')
  local before start status end after
  before=$(cpu_ticks "$tusk_pid")
  start=$(date +%s.%N)
  status=$(curl -s --cacert cert.pem --http1.1 -o /dev/null -w '%{http_code}' -X PATCH \
    -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
    -H 'Content-Type: application/offset+octet-stream' -T body.bin "$location")
  end=$(date +%s.%N)
  after=$(cpu_ticks "$tusk_pid")
  kill "$tusk_pid"; wait "$tusk_pid" 2>/dev/null || true; tusk_pid=
  [ "$status" = 204 ] || { echo "$mode: PATCH answered $status" >&2; exit 1; }
  awk -v m="$size_mib" -v s="$start" -v e="$end" -v b="$before" -v a="$after" -v hz="$hz" \
    'BEGIN {printf "%.0f %.2f\n", m / (e - s), (a - b) / hz}'
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
: >plain.txt; : >tls.txt
for round in $(seq "$repeat"); do
  for mode in plain tls; do
    port=18701
    [ "$mode" = tls ] && port=18702
    read -r speed cpu < <(one "$mode" "$port")
    echo "round $round $mode: $speed MiB/s, server CPU ${cpu}s"
    echo "$speed $cpu" >>"$mode.txt"
  done
done
for mode in plain tls; do
  echo "median $mode: $(cut -d' ' -f1 "$mode.txt" | median) MiB/s, server CPU $(cut -d' ' -f2 "$mode.txt" | median)s"
done
