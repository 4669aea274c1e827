#!/usr/bin/env python3
"""idle-connections: what N hostile idle connections cost a tusk node, and whether it still
serves an upload meanwhile.

    services/tusk-bench/scripts/idle-connections.py [N]   (default 1000)
      TUSK=target/release/tusk   the binary (needs a release build: cargo build --release -p tusk)
      MODE=silent                what each held connection sends: silent (nothing), p (one
                                 byte "P"), head (a partial HTTP/1 head), h2 (the HTTP/2
                                 preface and an empty SETTINGS frame), mixed (all four in turn)
      HOLD=5                     seconds the connections are held before the upload
      TUSK_SERVER__*             passed to the server, e.g. TUSK_SERVER__MAX_CONNECTIONS=500

Opens N connections to a fresh server (fresh data directory), holds them HOLD seconds, then
makes one normal tus upload (POST + PATCH of 1 MiB, on a fresh connection) while they are
held. Prints one JSON line: the server's RSS after opening them and its peak (VmHWM), the
upload's outcome and time, how many held connections the server had closed by then, and the
server's connection metrics.
"""

import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SENDS = {
    "silent": b"",
    "p": b"P",
    "head": b"PATCH /files/AAAA HTTP/1.1\r\nHost: x\r\n",
    "h2": H2_PREFACE,
}


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def start(data_dir):
    binary = os.environ.get("TUSK", os.path.join(ROOT, "target", "release", "tusk"))
    proc = subprocess.Popen(
        [binary, "--port", "0", "--admin-port", "0", "--upload-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    admin = addr = None
    for line in proc.stdout:
        if line.startswith("admin on "):
            admin = line.split()[-1]
        if line.startswith("listening on "):
            url = line.split()[-1]
            addr = url.split("//")[1].split("/")[0]
            return proc, addr, admin
    sys.exit("tusk exited before it listened")


def upload(addr, size=1 << 20):
    """POST then PATCH on fresh connections; returns (ok, seconds, detail)."""
    started = time.monotonic()
    try:
        request = urllib.request.Request(
            f"http://{addr}/files/", method="POST",
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
        with urllib.request.urlopen(request, timeout=30) as response:
            location = response.headers["Location"]
        request = urllib.request.Request(
            location, method="PATCH", data=b"x" * size,
            headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                     "Content-Type": "application/offset+octet-stream"})
        with urllib.request.urlopen(request, timeout=30) as response:
            offset = int(response.headers["Upload-Offset"])
        return offset == size, time.monotonic() - started, f"offset {offset}"
    except Exception as error:  # the outcome is reported, not raised
        return False, time.monotonic() - started, repr(error)


def closed_count(sockets):
    readable, _, _ = select.select(sockets, [], [], 0) if sockets else ([], [], [])
    closed = 0
    for s in readable:
        try:
            while True:
                data = s.recv(65536, socket.MSG_DONTWAIT)
                if not data:
                    closed += 1
                    break
        except BlockingIOError:
            pass  # a GOAWAY or a 408 arrived, the socket is still open
        except OSError:
            closed += 1
    return closed


def metrics(admin):
    wanted = ("tusk_open_connections", "tusk_connections_cut_total",
              "tusk_connections_refused_total")
    try:
        with urllib.request.urlopen(admin + "metrics", timeout=5) as response:
            text = response.read().decode()
    except Exception as error:
        return {"error": repr(error)}
    return {line.split(" ")[0]: float(line.split(" ")[-1])
            for line in text.splitlines() if line.startswith(wanted)}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    mode = os.environ.get("MODE", "silent")
    hold = float(os.environ.get("HOLD", "5"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    modes = list(SENDS) if mode == "mixed" else [mode]
    with tempfile.TemporaryDirectory(prefix="tusk-idle-") as data_dir:
        proc, addr, admin = start(data_dir)
        try:
            host, port = addr.rsplit(":", 1)
            rss_before = status_kib(proc.pid, "VmRSS")
            held = []
            for i in range(n):
                s = socket.create_connection((host, int(port)))
                send = SENDS[modes[i % len(modes)]]
                if send:
                    s.sendall(send)
                held.append(s)
            time.sleep(hold)
            rss_held = status_kib(proc.pid, "VmRSS")
            ok, seconds, detail = upload(addr)
            result = {
                "connections": n, "mode": mode, "hold_s": hold,
                "rss_start_kib": rss_before, "rss_held_kib": rss_held,
                "peak_rss_kib": status_kib(proc.pid, "VmHWM"),
                "upload_ok": ok, "upload_s": round(seconds, 3), "upload": detail,
                "held_closed_by_server": closed_count(held),
                "metrics": metrics(admin),
            }
            print(json.dumps(result))
            for s in held:
                s.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
