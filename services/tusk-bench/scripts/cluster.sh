#!/usr/bin/env bash
# Cluster benchmark: 3 tusk nodes with Redis behind nginx (deploy/nginx.conf, only its
# upstreams, listen port and paths rewritten) against one node with the embedded
# coordinator, one after the other on this machine.
#
#   services/tusk-bench/scripts/cluster.sh [SCENARIOS]     (default: small,big)
#   REPEAT=3          runs per setup; every JSON line is printed, medians last.
#   OTHER_TUSK=path   another tusk binary (e.g. the previous commit's release build): its 3
#                     nodes, on the same Redis, take turns with this build's as the setup
#                     `cluster-prev`, to compare a change side by side.
# Each cluster run also counts the Lua scripts Redis ran during it (every coordinator call
# on an upload's path is one script, one round trip) and prints them per upload: a small
# upload is a creation (1) and one PATCH.
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

# cluster_of NAME BINARY: 3 nodes of BINARY behind an nginx of their own; sets lb_port.
cluster_of() {
  local upstreams="" port
  for _ in 1 2 3; do
    port=$(free_port)
    "$2" --port "$port" --admin-port 0 --upload-dir "$work/shared-$1" --behind-proxy \
      --coordinator redis --redis-url "redis://127.0.0.1:$redis_port/" >/dev/null 2>&1 &
    pids+=($!)
    upstreams+="        server 127.0.0.1:$port;\n"
    wait_http "http://127.0.0.1:$port/files/"
  done
  start_nginx "$work/nginx-$1" "$upstreams"
  lb_port=$nginx_port
}

setups="single cluster"
declare -A urls
cluster_of cluster "$tusk"
urls[cluster]="http://127.0.0.1:$lb_port/files/"
if [ -n "${OTHER_TUSK:-}" ]; then
  cluster_of cluster-prev "$OTHER_TUSK"
  urls[cluster-prev]="http://127.0.0.1:$lb_port/files/"
  setups="single cluster-prev cluster"
fi

single_port=$(free_port)
"$tusk" --port "$single_port" --admin-port 0 --upload-dir "$work/single" >/dev/null 2>&1 &
pids+=($!)
urls[single]="http://127.0.0.1:$single_port/files/"
wait_http "${urls[single]}"
sleep 2 # let the nodes create their shard directories

scripts_run() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
    awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {s+=$3} END {print s+0}'
}

for scenario in ${scenarios//,/ }; do
  for run in $(seq "$repeat"); do
    for setup in $setups; do
      before=$(scripts_run)
      line=$("$tusk" bench --scenario "$scenario" "${urls[$setup]}" 2>/dev/null) || line="{\"scenario\":\"$scenario\",\"error\":true}"
      scripts=$(($(scripts_run) - before))
      echo "{\"setup\":\"$setup\",\"run\":$run,\"redis_scripts\":$scripts,${line#\{}" | tee -a "$raw"
    done
  done
done

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
    extra = ""
    if scenario == "small" and setup != "single" and ok:
        per_upload = statistics.median(r["redis_scripts"] / r["uploads"] for r in ok)
        extra = f"  Redis round trips per upload {per_upload:.2f} (a creation's 1 and the PATCH's)"
    print(f"  {scenario:8} {setup:12} {k} {value:.1f}{extra} ({len(ok)}/{len(rs)} ok)")
PY
