#!/usr/bin/env python3
"""Checks the monitoring deployment files under deploy/.

    python3 tests/deploy_files.py

Covers deploy/prometheus.yml (and its commented Kubernetes alternative),
deploy/prometheus-rules.yml, deploy/grafana/dashboards/tusk.json and the Grafana provisioning
files: they parse, they hang together, and every PromQL expression names only metrics Tusk
exports (TUSK_METRICS below; keep it in step with the code). When `promtool` is on PATH it also
runs `promtool check config`, `promtool check rules`, `promtool test rules` on scenarios written
here, and parses every dashboard expression with promtool.

Needs Python 3 and PyYAML (`pip install pyyaml`). Plain asserts, no pytest. Prints one line per
check and `N passed, M failed` last; exits non-zero when anything failed.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("tests/deploy_files.py needs PyYAML: pip install pyyaml")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
PROMETHEUS_YML = os.path.join(DEPLOY, "prometheus.yml")
RULES_YML = os.path.join(DEPLOY, "prometheus-rules.yml")
DASHBOARD_JSON = os.path.join(DEPLOY, "grafana", "dashboards", "tusk.json")
DATASOURCE_YML = os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yml")
DASHBOARD_PROVIDER_YML = os.path.join(DEPLOY, "grafana", "provisioning", "dashboards", "tusk.yml")

# The metrics Tusk exports (name -> type). Histograms also export _bucket, _sum and _count.
TUSK_METRICS = {
    "tusk_requests_total": "counter",
    "tusk_request_errors_total": "counter",
    "tusk_bytes_received_total": "counter",
    "tusk_uploads_created_total": "counter",
    "tusk_uploads_finished_total": "counter",
    "tusk_uploads_terminated_total": "counter",
    "tusk_open_connections": "gauge",
    "tusk_patch_duration_seconds": "histogram",
    "tusk_storage_call_duration_seconds": "histogram",
    "tusk_coordinator_call_duration_seconds": "histogram",
    "tusk_leases_held": "gauge",
    "tusk_lease_waits_total": "counter",
    "tusk_release_requests_honoured_total": "counter",
    "tusk_lease_losses_total": "counter",
    "tusk_sweeps_total": "counter",
    "tusk_expired_uploads_total": "counter",
    "tusk_purged_tombstones_total": "counter",
    "tusk_hook_calls_total": "counter",
    "tusk_release_requests_sent_total": "counter",
    "tusk_storage_bytes_rewritten_total": "counter",
    "tusk_storage_leftovers_removed_total": "counter",
}
# Metrics the dashboard may leave out (hooks do not exist yet).
NOT_ON_DASHBOARD = {"tusk_hook_calls_total"}
OTHER_METRICS = {"up"}  # plus anything process_*


def allowed_metric(name):
    if name in OTHER_METRICS or name.startswith("process_"):
        return True
    if name in TUSK_METRICS:
        return TUSK_METRICS[name] != "histogram"  # a bare histogram name is not a series
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and TUSK_METRICS.get(name[: -len(suffix)]) == "histogram":
            return True
    return False


# PromQL functions and aggregation operators (Prometheus 2.x).
PROMQL_FUNCTIONS = set(
    """
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
    day_of_year days_in_month delta deriv exp floor histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta
    increase irate label_join label_replace ln log2 log10 minute month predict_linear rate resets
    round scalar sgn sort sort_desc sqrt time timestamp vector year avg_over_time min_over_time
    max_over_time sum_over_time count_over_time quantile_over_time stddev_over_time
    stdvar_over_time last_over_time present_over_time acos acosh asin asinh atan atanh cos cosh
    sin sinh tan tanh deg pi rad
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
    """.split()
)
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan", "atan2"}


def promql_names(expr):
    """Returns (metric names, function names) used by a PromQL expression.

    A small lexer, not a parser: it drops strings, label matchers, range/subquery brackets,
    grouping label lists and Grafana variables, then sorts the remaining identifiers into
    functions (followed by '(') and metric names.
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    s = re.sub(r"\boffset\s+-?[0-9a-z]+", "", s)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "", s)
    metrics, functions = set(), set()
    for m in re.finditer(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        if tok[0].isdigit() or tok.lower() in PROMQL_KEYWORDS:
            continue
        if s[m.end():].lstrip().startswith("("):
            functions.add(tok)
        else:
            metrics.add(tok)
    return metrics, functions


def check_expr(where, expr):
    metrics, functions = promql_names(expr)
    assert metrics, f"{where}: no metric found in {expr!r}"
    bad = sorted(m for m in metrics if not allowed_metric(m))
    assert not bad, f"{where}: unknown metric(s) {bad} in {expr!r}"
    unknown = sorted(functions - PROMQL_FUNCTIONS)
    assert not unknown, f"{where}: unknown function(s) {unknown} in {expr!r}"
    return metrics


# ---------------------------------------------------------------------------------------------
# Loading

def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_dashboard():
    with open(DASHBOARD_JSON) as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, rows' nested (collapsed) panels included."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []) or [])
    return out


def dashboard_exprs(dash):
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                yield f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"]


def alert_rules():
    for g in load_yaml(RULES_YML)["groups"]:
        for r in g["rules"]:
            yield g["name"], r


def kubernetes_alternative():
    """The commented-out Kubernetes job in prometheus.yml, uncommented and parsed."""
    lines = open(PROMETHEUS_YML).read().splitlines()
    start = next(i for i, l in enumerate(lines) if re.match(r"\s*#\s*- job_name:", l))
    block = []
    for l in lines[start:]:
        if not l.strip().startswith("#"):
            break
        block.append(re.sub(r"^(\s*)# ?", r"\1", l, count=1))
    jobs = yaml.safe_load("\n".join(block))
    assert isinstance(jobs, list) and len(jobs) == 1, jobs
    return jobs[0]


# ---------------------------------------------------------------------------------------------
# Checks without promtool

def test_lexer_finds_metric_names():
    m, f = promql_names('histogram_quantile(0.99, sum by (le, op) (rate(tusk_x_bucket{op=~"a|b", '
                        'instance=~"$instance"}[$__rate_interval])))')
    assert m == {"tusk_x_bucket"}, m
    assert f == {"histogram_quantile", "sum", "rate"}, f
    m, _ = promql_names("sum(rate(a_total[5m])) / on (instance) group_left b > 0.5 and up == 0")
    assert m == {"a_total", "b", "up"}, m
    m, _ = promql_names('(sum(increase(c_total[30m])) or vector(0)) == 0')
    assert m == {"c_total"}, m
    for bad in ("sum(rate(tusk_bogus_total[5m]))", "tusk_patch_duration_seconds",
                "rate(tusk_requests[5m])", "rat(tusk_requests_total[5m])"):
        try:
            check_expr("self-test", bad)
        except AssertionError:
            continue
        raise AssertionError(f"check_expr accepted {bad!r}")
    check_expr("self-test", "process_resident_memory_bytes + up")


def test_prometheus_yml():
    cfg = load_yaml(PROMETHEUS_YML)
    assert cfg["global"]["scrape_interval"] == "15s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    job = jobs["tusk"]
    assert job.get("scrape_interval", cfg["global"]["scrape_interval"]) == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["tusk1:8081", "tusk2:8081", "tusk3:8081"], targets
    rule_files = cfg["rule_files"]
    assert rule_files == ["prometheus-rules.yml"], rule_files
    for rf in rule_files:
        assert os.path.isfile(os.path.join(os.path.dirname(PROMETHEUS_YML), rf)), rf


def test_kubernetes_alternative():
    job = kubernetes_alternative()
    assert job["job_name"] == "tusk"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}], job["kubernetes_sd_configs"]
    relabel = job["relabel_configs"]
    keep = [r for r in relabel if r.get("action") == "keep"]
    assert keep and keep[0]["source_labels"] == [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape"] and keep[0]["regex"] == "true"
    port = [r for r in relabel if r.get("target_label") == "__address__"]
    assert port and "__meta_kubernetes_pod_annotation_prometheus_io_port" in port[0]["source_labels"]
    # The address rewrite really produces <ip>:<annotated port>.
    regex, repl = port[0]["regex"], port[0]["replacement"].replace("$", "\\")
    for addr in ("10.1.2.3:8080", "10.1.2.3"):
        joined = ";".join([addr, "8081"])
        assert re.fullmatch(regex, joined), joined
        assert re.sub(f"^(?:{regex})$", repl, joined) == "10.1.2.3:8081", joined


def test_rules_yml():
    alerts = {}
    for group, r in alert_rules():
        assert "alert" in r, f"group {group}: only alerting rules expected, got {r}"
        assert r["alert"] not in alerts, f"duplicate alert {r['alert']}"
        alerts[r["alert"]] = r
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"].get("summary"), f"{r['alert']}: no summary"
        assert re.fullmatch(r"\d+[smh]", r.get("for", "0s")), r["alert"]
    expect = {
        "TuskReplicaDown": {"up"},
        "TuskHigh5xxRatio": {"tusk_requests_total"},
        "TuskLeaseLosses": {"tusk_lease_losses_total"},
        "TuskNoUploadsFinishing": {"tusk_requests_total", "tusk_uploads_finished_total"},
    }
    assert set(expect) <= set(alerts), sorted(set(expect) - set(alerts))
    for name, metrics in expect.items():
        used = check_expr(f"alert {name}", alerts[name]["expr"])
        assert metrics <= used, f"{name}: expected {metrics}, uses {used}"


def test_rule_exprs_use_known_metrics():
    n = 0
    for group, r in alert_rules():
        check_expr(f"rule {r.get('alert') or r.get('record')}", r["expr"])
        n += 1
    assert n >= 4, n


def test_dashboard_basics():
    dash = load_dashboard()
    assert dash["schemaVersion"] == 39
    assert dash.get("uid") and dash.get("title")
    tvars = {v["name"]: v for v in dash["templating"]["list"]}
    ds = tvars["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    inst = tvars["instance"]
    assert inst["type"] == "query" and inst["datasource"]["uid"] == "${DS_PROMETHEUS}", inst
    assert inst.get("multi") and inst.get("includeAll") and inst.get("allValue") == ".*", inst


def test_dashboard_panels_ids_and_grid():
    dash = load_dashboard()
    panels = all_panels(dash)
    assert len(panels) >= 15, len(panels)
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells = {}
    for p in panels:
        g = p.get("gridPos")
        assert isinstance(g, dict), f"panel {p.get('id')} has no gridPos"
        for k in ("h", "w", "x", "y"):
            assert isinstance(g.get(k), int) and g[k] >= 0, f"panel {p['id']} gridPos.{k}: {g}"
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, f"panel {p['id']}: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap"
                cells[(x, y)] = p["id"]


def test_dashboard_targets_use_datasource_variable():
    dash = load_dashboard()
    n = 0
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        assert p.get("title"), f"panel {p['id']} has no title"
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["id"]
        assert p.get("targets"), f"panel {p['id']} has no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"panel {p['id']}: duplicate refIds"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["id"]
            assert "$instance" in t["expr"], f"panel {p['id']}: not filtered by $instance"
            n += 1
    assert n > 0


def test_dashboard_exprs_use_known_metrics():
    dash = load_dashboard()
    used = set()
    for where, expr in dashboard_exprs(dash):
        used |= check_expr(where, expr)
    base = set()
    for m in used:
        for suffix in ("_bucket", "_sum", "_count"):
            if m.endswith(suffix) and m[: -len(suffix)] in TUSK_METRICS:
                m = m[: -len(suffix)]
        base.add(m)
    missing = sorted(set(TUSK_METRICS) - NOT_ON_DASHBOARD - base)
    assert not missing, f"metrics not on the dashboard: {missing}"
    for m in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert m in used, m
    # The latency panels: quantiles over the PATCH histogram, p99 by op for the backends.
    exprs = [e for _, e in dashboard_exprs(dash)]
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}," in e and "tusk_patch_duration_seconds_bucket" in e
                   for e in exprs), f"no PATCH p{q}"
    for h in ("tusk_storage_call_duration_seconds_bucket", "tusk_coordinator_call_duration_seconds_bucket"):
        assert any("histogram_quantile(0.99," in e and h in e and re.search(r"by \([^)]*\bop\b", e)
                   for e in exprs), f"no p99 by op over {h}"


def test_grafana_provisioning():
    ds = load_yaml(DATASOURCE_YML)
    assert ds["apiVersion"] == 1
    sources = ds["datasources"]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus", sources
    assert sources[0]["url"].startswith("http") and sources[0].get("isDefault") is True
    prov = load_yaml(DASHBOARD_PROVIDER_YML)
    assert prov["apiVersion"] == 1
    providers = prov["providers"]
    assert len(providers) == 1 and providers[0]["type"] == "file", providers
    # docker-compose mounts deploy/grafana/dashboards here.
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards", providers
    files = [f for f in os.listdir(os.path.dirname(DASHBOARD_JSON)) if f.endswith(".json")]
    assert files == ["tusk.json"], files


# ---------------------------------------------------------------------------------------------
# Checks with promtool (the run fails when it is not installed)

PROMTOOL = shutil.which("promtool")


def promtool(*args, cwd=None):
    r = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"promtool {' '.join(args)} failed:\n{r.stdout}{r.stderr}"
    return r.stdout


def test_promtool_check_config():
    promtool("check", "config", PROMETHEUS_YML)


def test_promtool_check_rules():
    promtool("check", "rules", RULES_YML)


def test_promtool_check_kubernetes_alternative():
    cfg = load_yaml(PROMETHEUS_YML)
    cfg["scrape_configs"] = [kubernetes_alternative()]
    cfg.pop("rule_files", None)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        try:
            promtool("check", "config", path)
        except AssertionError as e:
            # Debian's promtool is built without Kubernetes discovery. Check the rest of the job
            # (relabelling rules: actions, regexes) with a static target in its place.
            if "field kubernetes_sd_configs not found" not in str(e):
                raise
            cfg["scrape_configs"][0].pop("kubernetes_sd_configs")
            cfg["scrape_configs"][0]["static_configs"] = [{"targets": ["10.1.2.3:8081"]}]
            with open(path, "w") as f:
                yaml.safe_dump(cfg, f)
            promtool("check", "config", path)
            return "this promtool lacks kubernetes_sd_configs; relabel_configs checked with a static target"


def test_promtool_parses_dashboard_exprs():
    """Every dashboard expression, Grafana variables filled in, parsed by promtool."""
    dash = load_dashboard()
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs(dash)):
        e = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
        e = e.replace("$instance", ".*")
        assert "$" not in e, f"{where}: unhandled variable in {expr!r}"
        rules.append({"record": f"dashboard:expr:{i}", "expr": e})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dashboard-rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        promtool("check", "rules", path)


def test_promtool_test_rules():
    """Runs the alerts against synthetic series: each fires when it should and not otherwise.

    Annotations are stripped from a copy of the rules (their templates are checked by
    `promtool check rules`), so only expressions, `for` and labels are under test here.
    """
    groups = copy.deepcopy(load_yaml(RULES_YML)["groups"])
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    j, i1 = 'job="tusk"', 'instance="tusk1:8081"'
    tests = [
        {   # tusk2 stops answering scrapes at 2m.
            "interval": "1m",
            "input_series": [
                {"series": f"up{{{j},{i1}}}", "values": "1x20"},
                {"series": f'up{{{j},instance="tusk2:8081"}}', "values": "1 1 0x18"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "TuskReplicaDown", "exp_alerts": []},
                {"eval_time": "6m", "alertname": "TuskReplicaDown", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "job": "tusk", "instance": "tusk2:8081"}}]},
            ],
        },
        {   # tusk1: 1 req/s answered 204 plus 0.2 req/s answered 500 (17%); tusk2: a trickle
            # of 500s too small to count.
            "interval": "1m",
            "input_series": [
                {"series": f'tusk_requests_total{{{j},{i1},method="PATCH",status="204"}}', "values": "0+60x40"},
                {"series": f'tusk_requests_total{{{j},{i1},method="PATCH",status="500"}}', "values": "0+12x40"},
                {"series": f'tusk_requests_total{{{j},instance="tusk2:8081",method="HEAD",status="200"}}',
                 "values": "0+1x40"},
                {"series": f'tusk_requests_total{{{j},instance="tusk2:8081",method="HEAD",status="503"}}',
                 "values": "0+1x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "TuskHigh5xxRatio", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TuskHigh5xxRatio", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "instance": "tusk1:8081"}}]},
                {"eval_time": "20m", "alertname": "TuskNoUploadsFinishing", "exp_alerts": [
                    {"exp_labels": {"severity": "warning"}}]},
            ],
        },
        {   # One lease loss at 3m; forgotten once it leaves the 10m window.
            "interval": "1m",
            "input_series": [
                {"series": f"tusk_lease_losses_total{{{j},{i1}}}", "values": "0 0 0 1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "TuskLeaseLosses", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "TuskLeaseLosses", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "instance": "tusk1:8081"}}]},
                {"eval_time": "30m", "alertname": "TuskLeaseLosses", "exp_alerts": []},
            ],
        },
        {   # PATCHes arrive and uploads finish: no alert.
            "interval": "1m",
            "input_series": [
                {"series": f'tusk_requests_total{{{j},{i1},method="PATCH",status="204"}}', "values": "0+60x60"},
                {"series": f"tusk_uploads_finished_total{{{j},{i1}}}", "values": "0+1x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "50m", "alertname": "TuskNoUploadsFinishing", "exp_alerts": []},
            ],
        },
        {   # Uploads finished early, then only PATCHes: fires once the 30m window is clean.
            "interval": "1m",
            "input_series": [
                {"series": f'tusk_requests_total{{{j},{i1},method="PATCH",status="204"}}', "values": "0+60x90"},
                {"series": f"tusk_uploads_finished_total{{{j},{i1}}}", "values": "0 1 2 3x87"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "TuskNoUploadsFinishing", "exp_alerts": []},
                {"eval_time": "60m", "alertname": "TuskNoUploadsFinishing", "exp_alerts": [
                    {"exp_labels": {"severity": "warning"}}]},
            ],
        },
    ]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "rules.yml"), "w") as f:
            yaml.safe_dump({"groups": groups}, f)
        with open(os.path.join(d, "rules-test.yml"), "w") as f:
            yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                            "tests": tests}, f)
        promtool("test", "rules", "rules-test.yml", cwd=d)


# ---------------------------------------------------------------------------------------------

CHECKS = [
    test_lexer_finds_metric_names,
    test_prometheus_yml,
    test_kubernetes_alternative,
    test_rules_yml,
    test_rule_exprs_use_known_metrics,
    test_dashboard_basics,
    test_dashboard_panels_ids_and_grid,
    test_dashboard_targets_use_datasource_variable,
    test_dashboard_exprs_use_known_metrics,
    test_grafana_provisioning,
]
PROMTOOL_CHECKS = [
    test_promtool_check_config,
    test_promtool_check_rules,
    test_promtool_check_kubernetes_alternative,
    test_promtool_parses_dashboard_exprs,
    test_promtool_test_rules,
]


def main():
    passed = failed = 0
    checks = list(CHECKS)
    if PROMTOOL:
        checks += PROMTOOL_CHECKS
    else:
        # A check that cannot run is a failure, not a skip: install what it needs.
        print("FAIL promtool is not on PATH: apt-get install -y prometheus (for promtool)")
        failed += 1
    for c in checks:
        try:
            note = c()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {c.__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {c.__name__}" + (f" ({note})" if note else ""))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
