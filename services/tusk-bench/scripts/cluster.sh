#!/usr/bin/env bash
# Cluster benchmark: 3 tusk nodes with Redis behind nginx (deploy/nginx.conf, only its
# upstreams, listen port and paths rewritten) against one node with the embedded
# coordinator, one after the other on this machine.
#
#   services/tusk-bench/scripts/cluster.sh [SCENARIOS]     (default: small,big)
#   REPEAT=3   runs per setup; every JSON line is printed, medians last.
# Needs redis-server and nginx (apt-get install -y redis-server nginx) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../../.."
scenarios=${1:-small,big}
repeat=${REPEAT:-3}
tusk=$PWD/target/release/tusk
work=$(mktemp -d /tmp/tusk-cluster-bench.XXXXXX)
raw=$work/results.jsonl
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=services/tusk-bench/scripts/lib.sh
. services/tusk-bench/scripts/lib.sh

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' \
  --appendonly yes --appendfsync always >/dev/null &
pids+=($!)
sleep 0.5

upstreams=""
for i in 1 2 3; do
  port=$(free_port)
  "$tusk" --port "$port" --admin-port 0 --upload-dir "$work/shared" --behind-proxy \
    --coordinator redis --redis-url "redis://127.0.0.1:$redis_port/" >/dev/null 2>&1 &
  pids+=($!)
  upstreams+="        server 127.0.0.1:$port;\n"
  wait_http "http://127.0.0.1:$port/files/"
done
start_nginx "$work/nginx" "$upstreams"
lb_port=$nginx_port

single_port=$(free_port)
"$tusk" --port "$single_port" --admin-port 0 --upload-dir "$work/single" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$single_port/files/"
sleep 2 # let the nodes create their shard directories

for scenario in ${scenarios//,/ }; do
  for run in $(seq "$repeat"); do
    for setup in single cluster; do
      if [ $setup = single ]; then url="http://127.0.0.1:$single_port/files/"; else url="http://127.0.0.1:$lb_port/files/"; fi
      line=$("$tusk" bench --scenario "$scenario" "$url" 2>/dev/null) || line="{\"scenario\":\"$scenario\",\"error\":true}"
      echo "{\"setup\":\"$setup\",\"run\":$run,${line#\{}" | tee -a "$raw"
    done
  done
done
redis_calls=$(redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_/ {s+=$3} END {print s}')
echo "redis commands over the whole run: $redis_calls"

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = {"small": "uploads_per_s", "big": "mib_per_s", "parallel": "mib_per_s"}
groups = {}
for r in rows:
    groups.setdefault((r["scenario"], r["setup"]), []).append(r)
print("medians:")
for (scenario, setup), rs in sorted(groups.items()):
    ok = [r for r in rs if not r.get("error")]
    k = key.get(scenario, "mib_per_s")
    value = statistics.median(r[k] for r in ok) if ok else float("nan")
    print(f"  {scenario:8} {setup:8} {k} {value:.1f} ({len(ok)}/{len(rs)} ok)")
PY
