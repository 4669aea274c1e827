# Shared by the benchmark scripts that run several servers: loopback ports, waiting for a
# tus endpoint, and nginx running deploy/nginx.conf in front of some tusk nodes. Sourced
# after `cd` to the repository root; the caller keeps its children's pids in `pids`.

# A free port below the kernel's ephemeral range: a port the kernel handed out (bind to 0)
# is one that the benchmark's own client sockets may take again before the server binds it.
free_port() {
  python3 - <<'PY'
import random, socket
# Outside the kernel's ephemeral range, so no outgoing connection takes the port meanwhile:
# below it, or above it where it starts too low to leave room.
low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
spans = [(start, end) for start, end in ((10000, low), (high + 1, 65536)) if end - start >= 100]
if not spans:
    raise SystemExit(f"the ephemeral range {low}-{high} leaves no ports for servers")
for _ in range(1000):
    port = random.randrange(*random.choice(spans))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port outside the ephemeral range")
PY
}

wait_http() {
  for _ in $(seq 100); do curl -s -o /dev/null -X OPTIONS "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  exit 1
}

# start_nginx DIR UPSTREAMS: deploy/nginx.conf with only its upstream lines (UPSTREAMS, one
# `server host:port;` per line, newlines escaped as \n), listen port and paths rewritten,
# its files under DIR; waits until it answers and sets nginx_port.
start_nginx() {
  local dir=$1 upstreams=$2
  nginx_port=$(free_port)
  mkdir -p "$dir"
  sed -e "/# BEGIN tusk upstreams/,/# END tusk upstreams/c\\
$upstreams" \
      -e "s|listen 8080;|listen 127.0.0.1:$nginx_port;|" \
      -e "s|/run/nginx-tusk.pid|$dir/pid|" \
      -e "s|/var/log/nginx/|$dir/|g" \
      -e "s|/var/lib/nginx/|$dir/|g" deploy/nginx.conf > "$dir/nginx.conf"
  nginx -t -q -c "$dir/nginx.conf" -g 'daemon off;'
  nginx -c "$dir/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  wait_http "http://127.0.0.1:$nginx_port/files/"
}
