"""The deploy kit, tested like code: the alert rules pass promtool's check and
its unit tests (series for every alert), the systemd unit passes
systemd-analyze verify, the DaemonSet parses and mounts what serve needs, the
dashboard's queries are well formed (tests/test_serve_kernel.py runs them
against a real Prometheus)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml")
DEPLOY = os.path.join(ROOT, "deploy")
RULES = os.path.join(DEPLOY, "prometheus", "tcpoom-alerts.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (scripts/setup --test)")


@needs_promtool
def test_alert_rules_pass_promtool_check():
    r = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_every_alert_fires_on_its_series_in_promtool_test_rules():
    r = subprocess.run([sys.executable, "-m", "scripts.alert_tests", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([PROMTOOL, "test", "rules", "tcpoom-alerts.test.yml"],
                       cwd=os.path.join(DEPLOY, "prometheus"), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    tests = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "tcpoom-alerts.test.yml")))["tests"]
    fired = {t["alert_rule_test"][0]["alertname"] for t in tests if t["alert_rule_test"][0]["exp_alerts"]}
    rules = {r["alert"] for g in yaml.safe_load(open(RULES))["groups"] for r in g["rules"]}
    assert fired == rules
    for g in yaml.safe_load(open(RULES))["groups"]:
        for rule in g["rules"]:
            assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    text = open(os.path.join(DEPLOY, "systemd", "tcpoom.service")).read()
    assert "ExecStart=/usr/bin/tcpoom serve" in text
    for cap in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"):
        assert cap in text
    for key in ("ProtectSystem=strict", "StateDirectory=tcpoom", "NoNewPrivileges=yes"):
        assert key in text
    # the packaged path may not exist here: verify against this checkout's python
    unit = tmp_path / "tcpoom.service"
    unit.write_text(text.replace("/usr/bin/tcpoom serve", f"{sys.executable} -m tracer serve"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [ln for ln in r.stderr.splitlines() if "tcpoom.service" in ln]
    assert r.returncode == 0 and not problems, r.stderr


def test_daemonset_parses_and_mounts_what_serve_needs():
    docs = list(yaml.safe_load_all(open(os.path.join(DEPLOY, "kubernetes", "daemonset.yaml"))))
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    [c] = spec["containers"]
    assert c["args"][0] == "serve"
    sec = c["securityContext"]
    assert sec["privileged"] is False and sec["capabilities"]["drop"] == ["ALL"]
    assert {"BPF", "PERFMON", "NET_ADMIN"} <= set(sec["capabilities"]["add"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert set(mounts.values()) <= set(volumes)
    for path in ("/sys/kernel/btf", "/sys/fs/cgroup", "/var/lib/tcpoom"):
        assert path in mounts, path
    assert volumes[mounts["/var/lib/tcpoom"]]["hostPath"]["path"] == "/var/lib/tcpoom"
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


# kubernetes-validate (PyPI): the Kubernetes OpenAPI schemas of 1.25-1.37 in the
# package, checked offline. Installed by scripts/setup --test (into .test-deps/
# on a PEP 668 host, where Debian has no package of it); a missing validator
# fails the test instead of skipping it.
K8S_VERSIONS = ("1.25.0", "1.37.0")      # the oldest and newest schemas it carries
TEST_DEPS = os.path.join(ROOT, ".test-deps")


def _kubernetes_validate(*args):
    env = dict(os.environ)
    if os.path.isdir(TEST_DEPS):
        env["PYTHONPATH"] = TEST_DEPS + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", *args], capture_output=True,
                       text=True, env=env, timeout=120)
    assert "No module named kubernetes_validate" not in r.stderr, \
        "kubernetes-validate is not installed: run scripts/setup --test"
    return r


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_daemonset_validates_against_the_kubernetes_schemas(version):
    path = os.path.join(DEPLOY, "kubernetes", "daemonset.yaml")
    r = _kubernetes_validate("--strict", "--no-warn", "-k", version, path)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = {ln.split("resource ")[1].split("/")[0] for ln in r.stdout.splitlines() if "passed for resource" in ln}
    assert kinds == {"namespace", "daemonset"}, r.stdout


def test_the_schema_check_rejects_what_kubectl_would(tmp_path):
    """The validator is no rubber stamp: a misspelled field, a field
    Kubernetes does not have (strict) and a wrong type each fail, with the
    place named."""
    text = open(os.path.join(DEPLOY, "kubernetes", "daemonset.yaml")).read()
    bad = {"misspelled": text.replace("mountPath:", "mountpath:", 1),
           "unknown": text.replace("      hostPID: true\n", "      hostPID: true\n      hostPIDs: true\n", 1),
           "wrong_type": text.replace("hostPID: true", "hostPID: \"yes\"", 1)}
    where = {"misspelled": "volumeMounts.0", "unknown": "hostPIDs", "wrong_type": "hostPID"}
    for name, body in bad.items():
        assert body != text, name
        f = tmp_path / f"{name}.yaml"
        f.write_text(body)
        r = _kubernetes_validate("--strict", "--no-warn", "-k", K8S_VERSIONS[-1], str(f))
        assert r.returncode != 0, name
        assert where[name] in r.stdout + r.stderr, r.stdout + r.stderr


def dashboard_queries():
    """Every PromQL query of the Grafana dashboard, with Grafana's variables
    replaced by what matches everything."""
    d = json.load(open(os.path.join(DEPLOY, "grafana", "tcpoom-dashboard.json")))
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            expr = (t["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m")
                    .replace("$instance", ".*").replace("$netns", ".*").replace("$job", ".*"))
            out.append((p["title"], expr))
    return out


def test_dashboard_is_well_formed():
    d = json.load(open(os.path.join(DEPLOY, "grafana", "tcpoom-dashboard.json")))
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    queries = dashboard_queries()
    assert len(queries) >= 15
    assert all("$" not in q for _, q in queries)
    assert {v["name"] for v in d["templating"]["list"]} >= {"datasource", "instance", "netns"}
