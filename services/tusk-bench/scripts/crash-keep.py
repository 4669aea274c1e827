#!/usr/bin/env python3
"""crash-keep: how much of one long PATCH a server keeps when it is killed -9 mid-body.

    services/tusk-bench/scripts/crash-keep.py [SERVERS]   (default: tusk,node,rustus)
      SERVERS     comma list of tusk, tusk-prev, node, rustus
      REPEAT=3    runs per server; the summary prints medians
      SIZE_MIB=300, PAUSE=1
      OTHER_TUSK  the binary run as tusk-prev; PEERS=../shared/peers

Per run: a fresh server and data directory; POST an upload of SIZE_MIB; one PATCH announcing
all of it, of which all but the last MiB is sent as fast as the server reads (the body never
completes, as when a client's network drops); PAUSE seconds; kill -9 of the server's process
group; the same server restarted on the same directory; HEAD. Prints MiB sent and MiB the
HEAD offset says were kept, then medians. Needs a release build: cargo build --release -p tusk.
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PEERS = os.environ.get("PEERS", os.path.join(ROOT, "..", "shared", "peers"))
MIB = 1 << 20


def command(server, port, data_dir):
    if server == "tusk":
        return [os.path.join(ROOT, "target", "release", "tusk"), "--port", str(port),
                "--admin-port", "0", "--upload-dir", data_dir]
    if server == "tusk-prev":
        other = os.environ.get("OTHER_TUSK")
        if not other:
            sys.exit("set OTHER_TUSK to the other tusk binary")
        return [other, "--port", str(port), "--admin-port", "0", "--upload-dir", data_dir]
    if server in ("node", "rustus"):
        return [os.path.join(PEERS, f"{server}.sh"), str(port), data_dir]
    sys.exit(f"unknown server {server}")


def start(server, port, data_dir):
    env = dict(os.environ, RUSTUS_MAX_BODY=str(1 << 30))
    env = {k: v for k, v in env.items() if not k.startswith("TUSK_")}
    proc = subprocess.Popen(command(server, port, data_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}/files/"
    for _ in range(300):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="OPTIONS"), timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(f"{server} did not start on port {port}")


def one_run(server, port, size, pause):
    data_dir = tempfile.mkdtemp(prefix="tusk-crash-keep.")
    proc = start(server, port, data_dir)
    base = f"http://127.0.0.1:{port}"
    create = urllib.request.Request(base + "/files/", method="POST", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
    location = urllib.request.urlopen(create, timeout=10).headers["Location"]
    path = "/" + location.split("/", 3)[3] if location.startswith("http") else location
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                  f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                  f"Content-Length: {size}\r\n\r\n").encode())
    piece = os.urandom(MIB)
    sent = 0
    while sent < size - MIB:
        sock.sendall(piece)
        sent += MIB
    time.sleep(pause)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    sock.close()
    proc = start(server, port, data_dir)
    head = urllib.request.Request(base + path, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    try:
        kept = int(urllib.request.urlopen(head, timeout=10).headers["Upload-Offset"])
    except urllib.error.HTTPError as e:
        kept = 0 if e.code in (404, 410) else -1
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["rm", "-rf", data_dir], check=False)
    return {"server": server, "sent_mib": sent / MIB, "kept_mib": round(kept / MIB, 1)}


def main():
    servers = (sys.argv[1] if len(sys.argv) > 1 else "tusk,node,rustus").split(",")
    repeat = int(os.environ.get("REPEAT", "3"))
    size = int(os.environ.get("SIZE_MIB", "300")) * MIB
    pause = float(os.environ.get("PAUSE", "1"))
    rows = []
    port = 18700
    for _ in range(repeat):
        for server in servers:
            port += 1
            row = one_run(server, port, size, pause)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\ncrash-keep medians ({size // MIB} MiB in one PATCH, kill -9 {pause}s after "
          f"all but the last MiB was sent):")
    for server in servers:
        kept = [r["kept_mib"] for r in rows if r["server"] == server]
        print(f"  {server:9} kept {statistics.median(kept):6.1f} MiB  (runs: {kept})")


if __name__ == "__main__":
    main()
