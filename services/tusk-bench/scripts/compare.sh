#!/usr/bin/env bash
# Side-by-side benchmark: Tusk against the peer servers on this machine, one after another.
#
#   services/tusk-bench/scripts/compare.sh [SCENARIOS] [SERVERS]
#     SCENARIOS  comma list of big,small,parallel,resume   (default: all four)
#     SERVERS    comma list of tusk,node,rustus,null,tusk-prev  (default: tusk,node,rustus,null)
#                null: tusnull with --fsync, a bare receiver that fdatasyncs each PATCH body
#                before its 204 (the durable limit of this machine's disk and CPU)
#   REPEAT=5     runs per (scenario, server); the summary prints medians
#   PEERS=../shared/peers   where node.sh and rustus.sh live
#   OTHER_TUSK=path         another tusk binary (e.g. the previous commit's release build),
#                           run as the server `tusk-prev`, to compare a change side by side
#   BENCH_ARGS="..."        extra `tusk bench` arguments, e.g. "--big-chunk 1GiB" for `big`
#                           in one PATCH
#
# Each run gets a fresh server and a fresh data directory, so the peak RSS printed (VmHWM of
# the server process) belongs to that scenario alone. Raw JSON lines go to stdout as they
# come, the median summary last. Needs a release build: cargo build --release -p tusk.
set -euo pipefail
cd "$(dirname "$0")/../../.."
scenarios=${1:-big,small,parallel,resume}
servers=${2:-tusk,node,rustus,null}
repeat=${REPEAT:-5}
peers=${PEERS:-../shared/peers}
tusk=target/release/tusk
raw=$(mktemp /tmp/tusk-compare.XXXXXX.jsonl)
# Data directories are removed only at the end: mass deletions slow file creation on ext4
# for minutes, which would penalise whichever server runs next.
used_dirs=()
trap 'rm -rf "${used_dirs[@]}"' EXIT

# shellcheck source=services/tusk-bench/scripts/lib.sh
. services/tusk-bench/scripts/lib.sh

start_server() { # name dir -> sets pid, url
  port=$(free_port)
  case $1 in
    tusk) "$tusk" --port "$port" --admin-port 0 --upload-dir "$2" >/dev/null 2>&1 & ;;
    tusk-prev) "${OTHER_TUSK:?set OTHER_TUSK to the other tusk binary}" --port "$port" \
      --admin-port 0 --upload-dir "$2" >/dev/null 2>&1 & ;;
    node) "$peers/node.sh" "$port" "$2" >/dev/null 2>&1 & ;;
    rustus) "$peers/rustus.sh" "$port" "$2" >/dev/null 2>&1 & ;;
    null) "$peers/tusnull.sh" "$port" disk "$2" --fsync >/dev/null 2>&1 & ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
  esac
  pid=$!
  url="http://127.0.0.1:$port/files/"
  # Up to a minute: a peer's launcher builds or installs it on first use.
  for _ in $(seq 600); do
    curl -s -o /dev/null -X OPTIONS "$url" && return 0
    sleep 0.1
  done
  echo "$1 did not start on port $port" >&2
  exit 1
}

# Servers take turns run by run, so a slow minute of the machine hits them all alike.
for scenario in ${scenarios//,/ }; do
  for run in $(seq "$repeat"); do
    for server in ${servers//,/ }; do
      # Every run starts from the same state: nothing dirty in the page cache (the servers
      # that do not fsync would otherwise leave their writeback to whoever runs next), and
      # two seconds after the server first answers for it to finish starting up.
      sync
      dir=$(mktemp -d /tmp/tusk-compare-data.XXXXXX)
      start_server "$server" "$dir"
      sleep 2
      # A server that could not bind its port exits, and another process may answer there.
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "$server exited right after starting (is port $port taken?)" >&2
        exit 1
      fi
      # The scenario's CPU is counted from here: a server's start-up work (Tusk creates its
      # 4096 shard directories in the background) is reported apart, as startup_cpu_ms.
      read -r _ start_user start_system < <(awk '{print $10, $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo 0 0 0)
      line=$("$tusk" bench --scenario "$scenario" ${BENCH_ARGS:-} "$url" 2>/dev/null) || line="{\"scenario\":\"$scenario\",\"error\":true}"
      rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      # CPU the server process used (user + system, clock ticks): steadier than throughput
      # on a busy machine. Peers started through a wrapper script count only the wrapper.
      # Minor page faults: fresh pages the server's memory took (each zeroed by the kernel).
      read -r minor_faults user_ticks system_ticks < <(awk '{print $10, $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo 0 0 0)
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      used_dirs+=("$dir")
      tick_ms=$((1000 / $(getconf CLK_TCK)))
      startup_ms=$(((start_user + start_system) * tick_ms))
      user_ms=$(((user_ticks - start_user) * tick_ms)) system_ms=$(((system_ticks - start_system) * tick_ms))
      line="{\"server\":\"$server\",\"run\":$run,\"peak_rss_mib\":$((rss_kib / 1024)),\"startup_cpu_ms\":$startup_ms,\"server_cpu_ms\":$((user_ms + system_ms)),\"server_user_ms\":$user_ms,\"server_system_ms\":$system_ms,\"server_minor_faults\":$minor_faults,${line#\{}"
      echo "$line" | tee -a "$raw"
    done
  done
done

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = {"big": "mib_per_s", "parallel": "mib_per_s", "small": "uploads_per_s", "resume": "resume_mib_per_s"}
print("\nmedians (%s):" % sys.argv[1])
groups = {}
for r in rows:
    groups.setdefault((r["scenario"], r["server"]), []).append(r)
for (scenario, server), rs in sorted(groups.items()):
    key = keys.get(scenario)
    ok = [r for r in rs if not r.get("error")]
    if not ok:
        print(f"  {scenario:9} {server:7} all runs failed")
        continue
    value = statistics.median(r.get(key, 0) for r in ok)
    rss = statistics.median(r["peak_rss_mib"] for r in ok)
    cpu = statistics.median(r.get("server_cpu_ms", 0) for r in ok)
    user = statistics.median(r.get("server_user_ms", 0) for r in ok)
    faults = statistics.median(r.get("server_minor_faults", 0) for r in ok)
    extra = ""
    if scenario == "small":
        extra = " p99 %.1f ms" % statistics.median(r["p99_ms"] for r in ok)
    if scenario == "resume":
        extra = " kept_all %s sha256_ok %s" % ({r.get("kept_all") for r in ok}, {r.get("sha256_ok") for r in ok})
    startup = statistics.median(r.get("startup_cpu_ms", 0) for r in ok)
    print(f"  {scenario:9} {server:7} {key} {value:.1f}  peak RSS {rss:.0f} MiB  server CPU {cpu:.0f} ms (user {user:.0f}; start-up {startup:.0f} more), {faults:.0f} minor faults{extra}  ({len(ok)}/{len(rs)} ok)")
PY
