#!/usr/bin/env bash
# Coordinators side by side: the same load on Redis, a Redis Cluster (3 masters, 3 replicas)
# and etcd, in one run. For each, three
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
#              its gRPC KV calls; a Redis Cluster's per master as well), and the CPU time
#              of the coordinator's processes per upload.
#   COORDINATORS="redis redis-cluster etcd"   which of them.
# Needs redis-server, etcd (etcd-server), nginx and a release build (cargo build --release).
# Redis runs with appendfsync always and etcd with its default fsync: both durable. The
# Redis Cluster's nodes too; Tusk does not WAIT for its replicas here (wait_replicas 0, as
# on the single Redis), so the figures compare spreading, not replication.
set -euo pipefail
cd "$(dirname "$0")/../../.."
scenario=${1:-small}
repeat=${REPEAT:-3}
read -r -a coordinators <<<"${COORDINATORS:-redis redis-cluster etcd}"
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
redis_pid=$!
cluster_ports=() cluster_pids=()
for i in 0 1 2 3 4 5; do
  port=$(free_port)
  mkdir -p "$work/rc$i"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/rc$i" --save '' \
    --appendonly yes --appendfsync always --cluster-enabled yes --cluster-port "$(free_port)" \
    --cluster-node-timeout 1000 >/dev/null &
  pids+=($!) cluster_pids+=($!) cluster_ports+=("$port")
done
sleep 0.5
cluster_seeds=""
for port in "${cluster_ports[@]}"; do
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  cluster_seeds+="${cluster_seeds:+,}redis://127.0.0.1:$port/"
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
  --cluster-replicas 1 --cluster-yes >/dev/null
cluster_ok() {
  for port in "${cluster_ports[@]}"; do
    redis-cli -p "$port" cluster info | grep -q cluster_state:ok || return 1
  done
}
until cluster_ok; do sleep 0.1; done
etcd_port=$(free_port)
etcd_peer=$(free_port)
etcd --data-dir "$work/etcd" --name bench \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "bench=http://127.0.0.1:$etcd_peer" >/dev/null 2>&1 &
pids+=($!)
etcd_pid=$!
sleep 1

declare -A single lb admins
for coordinator in "${coordinators[@]}"; do
  case $coordinator in
    redis) args=(--coordinator redis --redis-url "redis://127.0.0.1:$redis_port/") ;;
    redis-cluster) args=(--coordinator redis --redis-cluster-nodes "$cluster_seeds") ;;
    etcd) args=(--coordinator etcd --etcd-endpoints "http://127.0.0.1:$etcd_port") ;;
    *) echo "unknown coordinator $coordinator" >&2; exit 1 ;;
  esac
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

redis_commands() {
  redis-cli -p "$1" info commandstats | tr -d '\r' |
    awk -F'[=,:]' '/^cmdstat_/ && !/cmdstat_info/ && !/cmdstat_cluster/ && !/cmdstat_ping/ {s+=$3} END {print s+0}'
}

# Commands each master of the Redis Cluster ran, space-separated.
shard_calls() {
  for port in "${cluster_ports[@]}"; do
    if redis-cli -p "$port" info replication | grep -q role:master; then
      printf '%s ' "$(redis_commands "$port")"
    fi
  done
}

server_calls() {
  case $1 in
    redis) redis_commands "$redis_port" ;;
    redis-cluster) shard_calls | awk '{for (i = 1; i <= NF; i++) s += $i} END {print s+0}' ;;
    etcd) curl -s "http://127.0.0.1:$etcd_port/metrics" |
      awk '/^grpc_server_handled_total\{.*grpc_service="etcdserverpb.KV"/ {s+=$NF} END {print s+0}' ;;
  esac
}

# CPU time (ms, user + system) of the coordinator's processes so far.
server_cpu_ms() {
  local p ticks=0 tick_hz
  tick_hz=$(getconf CLK_TCK)
  case $1 in
    redis) set -- "$redis_pid" ;;
    redis-cluster) set -- "${cluster_pids[@]}" ;;
    etcd) set -- "$etcd_pid" ;;
  esac
  for p in "$@"; do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $((ticks * 1000 / tick_hz))
}

for run in $(seq "$repeat"); do
  for coordinator in "${coordinators[@]}"; do
    for setup in single cluster; do
      if [ $setup = single ]; then url=${single[$coordinator]}; else url=${lb[$coordinator]}; fi
      before=$(node_calls $coordinator) before_server=$(server_calls $coordinator)
      before_cpu=$(server_cpu_ms $coordinator) before_shards=$(shard_calls)
      line=$("$tusk" bench --scenario "$scenario" "$url" 2>/dev/null) || line="{\"scenario\":\"$scenario\",\"error\":true}"
      after=$(node_calls $coordinator) after_server=$(server_calls $coordinator)
      after_cpu=$(server_cpu_ms $coordinator) after_shards=$(shard_calls)
      shards=$(paste -d- <(tr ' ' '\n' <<<"$after_shards") <(tr ' ' '\n' <<<"$before_shards") |
        grep -v '^-$' | bc | paste -sd, -)
      [ $coordinator = redis-cluster ] || shards=""
      echo "{\"coordinator\":\"$coordinator\",\"setup\":\"$setup\",\"run\":$run,\"node_calls\":$((after - before)),\"server_calls\":$((after_server - before_server)),\"server_cpu_ms\":$((after_cpu - before_cpu)),\"shard_calls\":[$shards],${line#\{}" | tee -a "$raw"
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
    shards = [r["shard_calls"] for r in counted if r.get("shard_calls")]
    spread = ""
    if shards:
        last = shards[-1]
        spread = ", commands per master " + "/".join(str(n) for n in last) + " (last run)"
    print(f"  {scenario:8} {coordinator:13} {setup:8} {k} {value:.1f}, per upload: "
          f"{per('node_calls'):.2f} coordinator calls by the nodes, {per('server_calls'):.2f} "
          f"counted by the server, {per('server_cpu_ms'):.3f} ms of its CPU{spread} "
          f"({len(ok)}/{len(rs)} ok)")
PY
