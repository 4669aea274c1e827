#!/usr/bin/env bash
# Coordinators side by side: the same load on Redis and on etcd, in one run. For each, three
# tusk nodes on one shared directory behind nginx (deploy/nginx.conf, only its upstreams,
# listen port and paths rewritten), and one of those nodes alone ("single"). The setups take
# turns run by run, so drift on this machine hits both alike.
#
#   services/tusk-bench/scripts/coordinators.sh [SCENARIO]   (default: small)
#   REPEAT=3   runs per setup; every JSON line is printed, medians last, with the
#              coordinator calls per upload: as the nodes made them (the
#              tusk_coordinator_call_duration_seconds counts of their /metrics; each is one
#              round trip on either coordinator) and as the server counted them (Redis:
#              every command of INFO commandstats, those its scripts run included; etcd:
#              its gRPC KV calls).
# Needs redis-server, etcd (etcd-server), nginx and a release build (cargo build --release).
# Redis runs with appendfsync always and etcd with its default fsync: both durable.
set -euo pipefail
cd "$(dirname "$0")/../../.."
scenario=${1:-small}
repeat=${REPEAT:-3}
tusk=$PWD/target/release/tusk
work=$(mktemp -d /tmp/tusk-coordinators.XXXXXX)
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
etcd_port=$(free_port)
etcd_peer=$(free_port)
etcd --data-dir "$work/etcd" --name bench \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "bench=http://127.0.0.1:$etcd_peer" >/dev/null 2>&1 &
pids+=($!)
sleep 1

declare -A single lb admins
for coordinator in redis etcd; do
  if [ $coordinator = redis ]; then
    args=(--coordinator redis --redis-url "redis://127.0.0.1:$redis_port/")
  else
    args=(--coordinator etcd --etcd-endpoints "http://127.0.0.1:$etcd_port")
  fi
  upstreams=""
  for i in 1 2 3; do
    port=$(free_port)
    admin=$(free_port)
    "$tusk" --port "$port" --admin-port "$admin" --upload-dir "$work/shared-$coordinator" --behind-proxy \
      "${args[@]}" >/dev/null 2>&1 &
    admins[$coordinator]+=" $admin"
    pids+=($!)
    upstreams+="        server 127.0.0.1:$port;\n"
    wait_http "http://127.0.0.1:$port/files/"
    [ "$i" = 1 ] && single[$coordinator]="http://127.0.0.1:$port/files/"
  done
  start_nginx "$work/nginx-$coordinator" "$upstreams"
  lb[$coordinator]="http://127.0.0.1:$nginx_port/files/"
done
sleep 2 # let the nodes create their shard directories

node_calls() {
  for admin in ${admins[$1]}; do curl -s "http://127.0.0.1:$admin/metrics"; done |
    awk '/^tusk_coordinator_call_duration_seconds_count/ {s+=$NF} END {print s+0}'
}

server_calls() {
  if [ "$1" = redis ]; then
    redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
      awk -F'[=,:]' '/^cmdstat_/ && !/cmdstat_info/ {s+=$3} END {print s+0}'
  else
    curl -s "http://127.0.0.1:$etcd_port/metrics" |
      awk '/^grpc_server_handled_total\{.*grpc_service="etcdserverpb.KV"/ {s+=$NF} END {print s+0}'
  fi
}

for run in $(seq "$repeat"); do
  for coordinator in redis etcd; do
    for setup in single cluster; do
      if [ $setup = single ]; then url=${single[$coordinator]}; else url=${lb[$coordinator]}; fi
      before=$(node_calls $coordinator) before_server=$(server_calls $coordinator)
      line=$("$tusk" bench --scenario "$scenario" "$url" 2>/dev/null) || line="{\"scenario\":\"$scenario\",\"error\":true}"
      after=$(node_calls $coordinator) after_server=$(server_calls $coordinator)
      echo "{\"coordinator\":\"$coordinator\",\"setup\":\"$setup\",\"run\":$run,\"node_calls\":$((after - before)),\"server_calls\":$((after_server - before_server)),${line#\{}" | tee -a "$raw"
    done
  done
done

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = {"small": "uploads_per_s", "big": "mib_per_s", "parallel": "mib_per_s"}
groups = {}
for r in rows:
    groups.setdefault((r["scenario"], r["coordinator"], r["setup"]), []).append(r)
print("medians:")
for (scenario, coordinator, setup), rs in sorted(groups.items()):
    ok = [r for r in rs if not r.get("error")]
    k = key.get(scenario, "mib_per_s")
    value = statistics.median(r[k] for r in ok) if ok else float("nan")
    counted = [r for r in ok if r.get("uploads")]
    per = lambda f: statistics.median(r[f] / r["uploads"] for r in counted) if counted else float("nan")
    print(f"  {scenario:8} {coordinator:6} {setup:8} {k} {value:.1f}, per upload: "
          f"{per('node_calls'):.2f} coordinator calls by the nodes, {per('server_calls'):.2f} "
          f"counted by the server ({len(ok)}/{len(rs)} ok)")
PY
