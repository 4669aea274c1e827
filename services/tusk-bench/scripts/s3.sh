#!/usr/bin/env bash
# Tusk on S3 against the same S3 server used directly: one upload of SIZE through Tusk
# (`tusk bench --scenario big`, one PATCH) and the same bytes as a plain multipart upload
# straight to the server (`--scenario s3-direct`), same part size and parts in flight.
#
#   services/tusk-bench/scripts/s3.sh
#   SIZE=1GiB PART=16MiB IN_FLIGHT=4 REPEAT=3 TUSK=target/release/tusk   (defaults)
#
# The S3 server is moto (pip install 'moto[server]==5.1.22'), started here on loopback.
# Prints each run's JSON line, then the medians, Tusk's peak RSS (VmHWM) and its CPU time.
# Needs a release build: cargo build --release -p tusk.
set -euo pipefail
cd "$(dirname "$0")/../../.."
size=${SIZE:-1GiB}
part=${PART:-16MiB}
in_flight=${IN_FLIGHT:-4}
repeat=${REPEAT:-3}
tusk=${TUSK:-target/release/tusk}
command -v moto_server >/dev/null || { echo "moto_server missing: pip install 'moto[server]==5.1.22'" >&2; exit 1; }
work=$(mktemp -d /tmp/tusk-s3bench.XXXXXX)
moto_port=18600
tusk_port=18601
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
tusk_pid=
trap 'kill $moto_pid $tusk_pid 2>/dev/null || true; rm -rf "$work"' EXIT
endpoint="http://127.0.0.1:$moto_port"
for _ in $(seq 100); do curl -s -o /dev/null "$endpoint" && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
part_bytes=$(python3 -c "import re,sys;m=re.fullmatch(r'(\d+)(KiB|MiB|GiB)?','$part');print(int(m[1])*{None:1,'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}[m[2]])")
# The bucket, created by one direct run of a small size.
"$tusk" bench --scenario s3-direct --big-size 1MiB --s3-bucket tusk-bench "$endpoint" >/dev/null 2>&1

raw=$work/runs.jsonl
: >"$raw"
for run in $(seq "$repeat"); do
  "$tusk" bench --scenario s3-direct --big-size "$size" --s3-part-size "$part" \
    --s3-parts-in-flight "$in_flight" --s3-bucket tusk-bench "$endpoint" 2>/dev/null | tee -a "$raw"
  TUSK_STORAGE__S3__PARTS_IN_FLIGHT=$in_flight "$tusk" --port "$tusk_port" --admin-port 0 --upload-dir "$work/data-$run" \
    --storage s3 --s3-bucket tusk-bench --s3-endpoint "$endpoint" --s3-path-style \
    --s3-part-size "$part_bytes" --s3-object-prefix "run$run/" >"$work/tusk.log" 2>&1 &
  tusk_pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null -X OPTIONS "http://127.0.0.1:$tusk_port/files/" && break; sleep 0.1; done
  line=$("$tusk" bench --scenario big --big-size "$size" --big-chunk "$size" --no-verify \
    "http://127.0.0.1:$tusk_port/files/" 2>/dev/null)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$tusk_pid/status")
  # utime + stime of the whole run, in clock ticks.
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$tusk_pid/stat")
  echo "${line%\}},\"server\":\"tusk\",\"peak_rss_kib\":$rss,\"cpu_s\":$cpu}" | tee -a "$raw"
  kill "$tusk_pid"; wait "$tusk_pid" 2>/dev/null || true; tusk_pid=
done
python3 - "$raw" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
direct = [r["mib_per_s"] for r in runs if r["scenario"] == "s3-direct"]
tusk = [r["mib_per_s"] for r in runs if r["scenario"] == "big"]
rss = [r["peak_rss_kib"] for r in runs if r["scenario"] == "big"]
cpu = [r["cpu_s"] for r in runs if r["scenario"] == "big"]
d, t = statistics.median(direct), statistics.median(tusk)
print(f"direct multipart: median {d:.1f} MiB/s {direct}")
print(f"through Tusk:     median {t:.1f} MiB/s {tusk}  = {100*t/d:.0f}% of direct")
print(f"Tusk peak RSS:    {max(rss)/1024:.0f} MiB (max of runs)")
print(f"Tusk CPU:         median {statistics.median(cpu):.2f} s (user + system) {cpu}")
PY
