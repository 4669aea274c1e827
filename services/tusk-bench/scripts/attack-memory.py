#!/usr/bin/env python3
"""attack-memory: a tusk node's memory under several attacks at once, on S3 with a slow hook
endpoint, and whether it still serves a normal upload meanwhile.

    services/tusk-bench/scripts/attack-memory.py
      TUSK=target/release/tusk   the binary (needs a release build: cargo build --release -p tusk)
      IDLE=1000                  (a) idle TCP connections held open, sending nothing
      STALLED=50                 (b) uploads whose PATCH sends its head and STALL_BYTES of body,
      STALL_BYTES=4194304            then stalls with the socket held open
      CREATIONS=4000             (c) POST creations, each with an X-Padding header of PADDING
      PADDING=60000                  bytes (forwarded to the hooks, so queued payloads are big)
      METHODS=10000              (d) requests with random 12-letter method tokens
      THREADS=8                  keep-alive connections (threads) for (c), and for (d)
      UPLOAD_MIB=20              the normal upload (POST + one PATCH, then GET and sha256)
      WARMUP=3                   seconds the attacks run before the normal upload starts
      HOLD=0                     seconds (a) and (b) stay held after (c) and (d) ended (past
                                 30 s / 60 s the server's header_read / network timeouts act)
      SETTLE=5                   seconds sampled after the held sockets are closed
      HOOK_DELAY=2               seconds the hook receiver sleeps before answering each POST
      PART_SIZE=5242880          storage.s3.part_size (5 MiB: a stalled PATCH sits mid-part)
      TUSK_*                     passed to the server, e.g. TUSK_HOOKS__QUEUE_BYTES=16777216

Starts moto_server (pip install 'moto[server]==5.1.22') on a free loopback port with a fresh
bucket, a hook receiver that answers every POST after HOOK_DELAY seconds (post-create and
post-receive notifications pile up in the node's queue), and one fresh tusk node on S3
(`--config` file: [hooks] with X-Padding forwarded, [storage.s3] part_size). Launches the
four attacks concurrently, makes the normal upload after WARMUP seconds, waits for (c) and
(d) to finish (and HOLD seconds more), reads what the held sockets got, closes them and samples SETTLE seconds more.
VmRSS is sampled every 100 ms throughout. Prints one JSON line: RSS at start, peak (sampled
and VmHWM), RSS when the attacks ended and after the sockets were released, a per-second
series, the normal upload's outcome and times, what each attack got (statuses, connections
closed by the server), the hook receiver's count, the relevant admin metrics and the
buffer/queue settings in force (defaults from `tusk config-reference`). Exits 0 whatever the
figures are; only a broken setup (no moto, tusk not listening) fails.
"""

import hashlib
import http.client
import http.server
import json
import os
import random
import re
import resource
import select
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
TUS = {"Tus-Resumable": "1.0.0"}


def knob(name, default):
    return type(default)(os.environ.get(name, default))


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    return os.environ.get("TUSK", os.path.join(ROOT, "target", "release", "tusk"))


def config_defaults():
    """key -> default of the rows of `tusk config-reference` this benchmark is about."""
    wanted = ("buffer", "part_size", "parts_in_flight", "hooks.queue", "max_connections",
              "max_header_bytes", "header_read_timeout", "network_timeout")
    out = subprocess.run([binary(), "config-reference"], capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip().strip("`") for c in line.split("|")]
        if len(cells) > 4 and any(w in cells[1] for w in wanted):
            rows[cells[1]] = cells[4]
    # Settings the brief names that this binary may not have (null: absent).
    for key in ("storage.s3.buffer_budget", "storage.s3.buffer_wait"):
        rows.setdefault(key, None)
    return rows


# --- moto -------------------------------------------------------------------------------

def start_moto(work):
    if not shutil.which("moto_server"):
        sys.exit("moto_server missing: pip install 'moto[server]==5.1.22'")
    port = free_port()
    log = open(os.path.join(work, "moto.log"), "w")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=2).read()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None:
                sys.exit("moto_server exited; see its log")
            time.sleep(0.2)
    else:
        proc.terminate()
        sys.exit("moto_server did not answer within 60 s")
    import boto3  # only needed here
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=AWS_ENV["AWS_REGION"],
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="tusk-attack")
    return proc, endpoint


# --- the slow hook receiver ---------------------------------------------------------------

class HookReceiver:
    def __init__(self, delay):
        self.events = Counter()
        self.bytes = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    event = json.loads(body).get("event", "?")
                except ValueError:
                    event = "unparsable"
                with receiver.lock:
                    receiver.events[event] += 1
                    receiver.bytes += len(body)
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def summary(self):
        with self.lock:
            return {"received": dict(self.events), "bytes": self.bytes}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- tusk ---------------------------------------------------------------------------------

def start_tusk(work, endpoint, hook_url, part_size):
    config = os.path.join(work, "tusk.toml")
    with open(config, "w") as f:
        f.write("[hooks]\n"
                f'endpoint = "{hook_url}"\n'
                'events = ["post-create", "post-receive"]\n'
                'forward_headers = ["x-padding", "upload-length", "tus-resumable"]\n'
                "\n[storage.s3]\n"
                f"part_size = {part_size}\n")
    env = dict(os.environ, **AWS_ENV)
    log = open(os.path.join(work, "tusk.log"), "w")
    proc = subprocess.Popen(
        [binary(), "--config", config, "--port", "0", "--admin-port", "0",
         "--upload-dir", os.path.join(work, "data"), "--storage", "s3",
         "--s3-bucket", "tusk-attack", "--s3-endpoint", endpoint, "--s3-path-style"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    admin = None
    for line in proc.stdout:
        if line.startswith("admin on "):
            admin = line.split()[-1]
        if line.startswith("listening on "):
            addr = line.split()[-1].split("//")[1].split("/")[0]
            # Keep draining stdout so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, addr, admin
    sys.exit("tusk exited before it listened; see tusk.log: "
             + open(os.path.join(work, "tusk.log")).read()[-2000:])


def metrics(admin):
    wanted = ("tusk_open_connections", "tusk_connections_cut_total",
              "tusk_connections_refused_total", "tusk_request_errors_total",
              "tusk_hook_calls_total", "tusk_uploads_created_total",
              "tusk_uploads_finished_total", "tusk_bytes_received_total")
    try:
        with urllib.request.urlopen(admin + "metrics", timeout=10) as response:
            text = response.read().decode()
    except Exception as error:
        return {"error": repr(error)}
    found, by_status = {}, Counter()
    for line in text.splitlines():
        if line.startswith(wanted):
            found[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("tusk_requests_total{"):
            status = line.split('status="')[1].split('"')[0] if 'status="' in line else "?"
            by_status[status] += float(line.rsplit(" ", 1)[1])
    found["tusk_requests_total by status"] = dict(by_status)
    return found


# --- sampling -----------------------------------------------------------------------------

class Sampler(threading.Thread):
    def __init__(self, pid, t0):
        super().__init__(daemon=True)
        self.pid, self.t0, self.samples = pid, t0, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            rss = status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - self.t0, rss))
            self.stop.wait(0.1)

    def at(self, t):
        """The last sample at or before t (seconds since t0)."""
        before = [rss for ts, rss in self.samples if ts <= t]
        return before[-1] if before else None

    def per_second(self):
        series, second = [], -1
        for ts, rss in self.samples:
            if int(ts) > second:
                second = int(ts)
                series.append([second, rss])
        return series


def counted(counter, key):
    counter[str(key)] += 1


# --- the attacks --------------------------------------------------------------------------

def attack_idle(host, port, n, held, stop, result, t0):
    """(a) n silent connections; records when the server closes them."""
    opened, failed = [], Counter()
    for _ in range(n):
        try:
            opened.append(socket.create_connection((host, port), timeout=10))
        except OSError as error:
            counted(failed, type(error).__name__)
    held.extend(opened)
    result.update(opened=len(opened), connect_failed=dict(failed))
    poller, by_fd = select.poll(), {}
    for s in opened:
        s.setblocking(False)
        poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
        by_fd[s.fileno()] = s
    closed_at, answered = [], Counter()
    while by_fd and not stop.is_set():
        for fd, _ in poller.poll(200):
            s = by_fd[fd]
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                counted(answered, data.split(b" ", 2)[1].decode(errors="replace")
                        if data.startswith(b"HTTP/") else "other")
                continue
            closed_at.append(round(time.monotonic() - t0, 1))
            poller.unregister(fd)
            del by_fd[fd]
    result.update(closed_by_server=len(closed_at), answered_before_close=dict(answered),
                  first_closed_at_s=min(closed_at) if closed_at else None,
                  last_closed_at_s=max(closed_at) if closed_at else None)


def create(host, port, length, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", "/files/", headers={**TUS, "Upload-Length": str(length),
                                                 **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status, response.headers.get("Location")
    finally:
        if own:
            conn.close()


def attack_stalled(host, port, n, stall_bytes, held, stop, result, t0):
    """(b) n uploads; each PATCH sends its head and stall_bytes of body, then stalls."""
    length = stall_bytes * 4
    body = random.randbytes(stall_bytes)
    created, statuses, sent, errors = [], Counter(), Counter(), Counter()
    responses, answered_at = Counter(), []
    lock = threading.Lock()
    for _ in range(n):
        try:
            status, location = create(host, port, length)
            counted(statuses, status)
            if status == 201:
                created.append(location)
        except Exception as error:
            counted(statuses, type(error).__name__)

    def one(location):
        path = "/" + location.split("//", 1)[1].split("/", 1)[1]
        head = (f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        try:
            s = socket.create_connection((host, port), timeout=60)
        except OSError as error:
            with lock:
                counted(errors, "connect " + type(error).__name__)
            return
        with lock:
            held.append(s)
        try:
            s.sendall(head)
            s.sendall(body)
            with lock:
                counted(sent, "all")
        except OSError as error:
            with lock:
                counted(sent, "cut " + type(error).__name__)
        # Stall: send nothing more, watch for an answer until the end.
        s.settimeout(0.5)
        while not stop.is_set():
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError as error:
                data = None
                with lock:
                    counted(responses, "reset " + type(error).__name__)
                break
            with lock:
                if not data:
                    counted(responses, "closed without answer")
                else:
                    counted(responses, data.split(b" ", 2)[1].decode(errors="replace")
                            if data.startswith(b"HTTP/") else "other")
                answered_at.append(round(time.monotonic() - t0, 1))
            break

    threads = [threading.Thread(target=one, args=(loc,), daemon=True) for loc in created]
    for t in threads:
        t.start()
    result.update(created=dict(statuses), body_sent=sent, errors=errors,
                  responses=responses, answered_at=answered_at)
    for t in threads:
        t.join()


def keepalive_worker(host, port, jobs, make_request, statuses, errors, lock):
    """Sends make_request() jobs times on one keep-alive connection, reconnecting on errors."""
    conn = None
    for _ in range(jobs):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=60)
            method, headers = make_request()
            conn.request(method, "/files/", headers=headers)
            response = conn.getresponse()
            response.read()
            with lock:
                counted(statuses, response.status)
            if response.will_close:
                conn.close()
                conn = None
        except Exception as error:
            with lock:
                counted(errors, type(error).__name__)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def attack_pool(host, port, total, threads, make_request, result):
    statuses, errors, lock = Counter(), Counter(), threading.Lock()
    started = time.monotonic()
    workers = [threading.Thread(
        target=keepalive_worker, daemon=True,
        args=(host, port, total // threads + (i < total % threads), make_request,
              statuses, errors, lock)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result.update(statuses=dict(statuses), errors=dict(errors),
                  seconds=round(time.monotonic() - started, 1))


def normal_upload(host, port, size):
    """POST + PATCH on fresh connections, then GET and sha256; returns a dict."""
    data = random.randbytes(size)
    started = time.monotonic()
    out = {"bytes": size}
    try:
        status, location = create(host, port, size)
        out["post_status"], out["post_s"] = status, round(time.monotonic() - started, 3)
        if status != 201:
            raise RuntimeError(f"POST answered {status}")
        path = "/" + location.split("//", 1)[1].split("/", 1)[1]
        t = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("PATCH", path, body=data, headers={
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        response = conn.getresponse()
        response.read()
        conn.close()
        out["patch_status"], out["patch_s"] = response.status, round(time.monotonic() - t, 3)
        out["offset"] = response.headers.get("Upload-Offset")
        t = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("GET", path, headers=TUS)
        response = conn.getresponse()
        got = response.read()
        conn.close()
        out["get_status"], out["get_s"] = response.status, round(time.monotonic() - t, 3)
        out["sha256_match"] = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        out["ok"] = out["patch_status"] == 204 and out["sha256_match"]
    except Exception as error:  # the outcome is reported, not raised
        out["ok"], out["error"] = False, repr(error)
    out["total_s"] = round(time.monotonic() - started, 3)
    return out


def random_method():
    # With Tus-Resumable, so the request reaches method dispatch instead of a 412.
    return "".join(random.choices(string.ascii_uppercase, k=12)), TUS


def main():
    idle, stalled = knob("IDLE", 1000), knob("STALLED", 50)
    stall_bytes, creations = knob("STALL_BYTES", 4 << 20), knob("CREATIONS", 4000)
    padding, methods = knob("PADDING", 60000), knob("METHODS", 10000)
    threads, upload_mib = knob("THREADS", 8), knob("UPLOAD_MIB", 20)
    warmup, settle, hold = knob("WARMUP", 3.0), knob("SETTLE", 5.0), knob("HOLD", 0.0)
    hook_delay, part_size = knob("HOOK_DELAY", 2.0), knob("PART_SIZE", 5 << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = idle + stalled + 4 * threads + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    settings = config_defaults()
    work = tempfile.mkdtemp(prefix="tusk-attack-")
    moto = tusk = hooks = None
    held, stop = [], threading.Event()
    try:
        moto, endpoint = start_moto(work)
        hooks = HookReceiver(hook_delay)
        tusk, addr, admin = start_tusk(work, endpoint, hooks.url, part_size)
        host, port = addr.rsplit(":", 1)
        port = int(port)
        t0 = time.monotonic()
        sampler = Sampler(tusk.pid, t0)
        sampler.start()
        rss_start = status_kib(tusk.pid, "VmRSS")

        pad = "".join(random.choices(string.ascii_letters, k=padding))
        results = {"idle": {}, "stalled": {}, "creations": {}, "methods": {}}
        holders = [
            threading.Thread(target=attack_idle, daemon=True,
                             args=(host, port, idle, held, stop, results["idle"], t0)),
            threading.Thread(target=attack_stalled, daemon=True,
                             args=(host, port, stalled, stall_bytes, held, stop,
                                   results["stalled"], t0)),
        ]
        bursts = [
            threading.Thread(target=attack_pool, daemon=True, args=(
                host, port, creations, threads,
                lambda: ("POST", {**TUS, "Upload-Length": "1", "X-Padding": pad}),
                results["creations"])),
            threading.Thread(target=attack_pool, daemon=True, args=(
                host, port, methods, threads, random_method, results["methods"])),
        ]
        for t in holders + bursts:
            t.start()
        time.sleep(warmup)
        upload_started = time.monotonic() - t0
        upload = normal_upload(host, port, upload_mib << 20)
        upload["started_at_s"] = round(upload_started, 1)
        for t in bursts:
            t.join()
        attacks_ended = time.monotonic() - t0
        rss_attacks_ended = status_kib(tusk.pid, "VmRSS")
        metrics_under_attack = metrics(admin)
        time.sleep(hold)
        rss_held_end = status_kib(tusk.pid, "VmRSS")
        stop.set()
        for t in holders:
            t.join(timeout=10)
        for s in held:
            s.close()
        released = time.monotonic() - t0
        time.sleep(settle)
        sampler.stop.set()
        sampler.join()
        samples = [rss for _, rss in sampler.samples]
        peak_at = max(sampler.samples, key=lambda s: s[1])[0] if samples else None
        stalled_result = results["stalled"]
        for key in ("body_sent", "errors", "responses"):
            stalled_result[key] = dict(stalled_result.get(key, {}))
        answered_at = stalled_result.pop("answered_at", [])
        stalled_result["first_answer_at_s"] = min(answered_at) if answered_at else None
        log = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in
               open(os.path.join(work, "tusk.log"), errors="replace").read().splitlines()]
        levels = Counter(line.split()[1] for line in log if len(line.split()) > 1)
        result = {
            "attacks": {"idle": idle, "stalled": stalled, "stall_bytes": stall_bytes,
                        "creations": creations, "padding": padding, "methods": methods,
                        "threads": threads, "hook_delay_s": hook_delay,
                        "part_size": part_size},
            "settings": settings,
            "rss_start_kib": rss_start,
            "peak_rss_sampled_kib": max(samples) if samples else None,
            "peak_at_s": round(peak_at, 1) if peak_at is not None else None,
            "peak_rss_kib": status_kib(tusk.pid, "VmHWM"),
            "rss_at_upload_start_kib": sampler.at(upload_started),
            "attacks_ended_at_s": round(attacks_ended, 1),
            "rss_attacks_ended_kib": rss_attacks_ended,
            "hold_s": hold, "rss_held_end_kib": rss_held_end,
            "rss_after_release_kib": status_kib(tusk.pid, "VmRSS"),
            "released_at_s": round(released, 1),
            "rss_per_second_kib": sampler.per_second(),
            "upload": upload,
            "idle": results["idle"], "stalled": stalled_result,
            "creations": results["creations"], "methods": results["methods"],
            "hook_receiver": hooks.summary(),
            "metrics_under_attack": metrics_under_attack,
            "metrics_end": metrics(admin),
            "tusk_alive": tusk.poll() is None,
            "log_levels": dict(levels),
            "log_first_warn_error": next((line[:400] for line in log
                                          if line.split()[1:2] in (["WARN"], ["ERROR"])), None),
        }
        print(json.dumps(result))
    finally:
        stop.set()
        for s in held:
            try:
                s.close()
            except OSError:
                pass
        for proc in (tusk, moto):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if hooks is not None:
            hooks.stop()
        if os.environ.get("KEEP_WORK"):
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
