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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null -X OPTIONS "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

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
lb_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "/# BEGIN tusk upstreams/,/# END tusk upstreams/c\\
$upstreams" \
    -e "s|listen 8080;|listen 127.0.0.1:$lb_port;|" \
    -e "s|/run/nginx-tusk.pid|$work/nginx/pid|" \
    -e "s|/var/log/nginx/|$work/nginx/|g" \
    -e "s|/var/lib/nginx/|$work/nginx/|g" deploy/nginx.conf > "$work/nginx.conf"
nginx -t -q -c "$work/nginx.conf" -g 'daemon off;'
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_http "http://127.0.0.1:$lb_port/files/"

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
