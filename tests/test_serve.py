"""serve without the kernel: the web config (TLS, bcrypt basic auth) on a
real endpoint, bounded per-netns labels, triggers, and the collector's names."""
import base64
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import ROOT
from tracer.model import events as ev
from tracer.errors import UsageError
from tracer.serve import webconfig
from tracer.serve.collector import ServeState, TcpoomCollector
from tracer.serve.headroom import HostFigures
from tracer.serve.http import Endpoint, parse_listen
from tracer.serve.netns_counts import OTHER, NetnsCounts
from tracer.serve.triggers import Triggers, headroom_low

bcrypt = pytest.importorskip("bcrypt")
from prometheus_client import CollectorRegistry  # noqa: E402


def _records(*rows):
    return ev.frame_all([ev.Event.make(family=f, netns=n, verdict=v).pack() for f, n, v in rows])


def test_netns_counts_are_bounded_with_an_other_bucket():
    c = NetnsCounts(limit=2)
    c.register(10)
    payload = _records((ev.TW_OVERFLOW, 10, 0), (ev.TW_OVERFLOW, 11, 0), (ev.OOM_CHECK, 12, 0),
                       (ev.OOM_CHECK, 13, 0), (ev.PRESSURE, 0, ev.VERDICT_ENTER))
    c.add(payload, 5)
    snap = c.snapshot()
    assert snap[("10", "tw_overflow")] == 1 and snap[("10", "oom_check")] == 0
    assert snap[("11", "tw_overflow")] == 1
    assert snap[(OTHER, "oom_check")] == 2
    assert {ns for ns, _ in snap} == {"10", "11", OTHER}
    assert c.pressure_sampled == {"enter": 1, "leave": 0}


def test_orphan_limit_per_shift():
    h = HostFigures(4096, 10, (1, 2, 3), 5, 4096, 7, False)
    assert h.orphan_limits() == {0: 4096, 1: 2048, 2: 1024}
    assert h.tcp_mem_bytes() == {"min": 4096, "pressure": 8192, "max": 12288}


def test_triggers_fire_on_the_first_event_after_a_quiet_spell():
    t = Triggers(["orphan_kill", "tw_overflow", "refusal", "pressure", "headroom"], 0.1, rearm_s=60)
    c = [0] * ev.CNT_MAX
    snap = {"tcpext": {"TCPTimeWaitOverflow": 0}, "pressure": False}
    assert t.check(c, snap, now=0) == []
    c[ev.CNT_OOM_CHECK] = 3
    assert t.check(c, snap, now=1) == ["orphan_kill"]
    c[ev.CNT_OOM_CHECK] = 9
    assert t.check(c, snap, now=2) == []            # the same burst
    c[ev.CNT_OOM_CHECK] = 10
    assert t.check(c, snap, now=100) == ["orphan_kill"]   # 98 s after the last move
    assert t.check(None, {"tcpext": {"TCPTimeWaitOverflow": 4}, "pressure": True}, now=101) == \
        ["tw_overflow", "pressure"]
    low = {"sockstat": {"TCP": {"mem": 95, "orphan": 0, "tw": 0}},
           "limits": {"tcp_mem": [10, 20, 100], "tcp_max_orphans": 10, "tcp_max_tw_buckets": 5}}
    assert headroom_low(low, 0.1) == "tcp_mem[2]"
    assert "headroom" in t.check(None, dict(low, pressure=True), now=102)
    assert "headroom" not in t.check(None, dict(low, pressure=True), now=103)   # still low: once


def test_a_hard_limit_refusal_between_snapshots_is_headroom_gone():
    # tcp_mem[2] passed and back within a second: the snapshots never see it, the
    # refusal's class (memory_allocated > tcp_mem[2] when the kernel refused) does
    t = Triggers(["headroom"], 0.1)
    snap = {"sockstat": {"TCP": {"mem": 5}}, "limits": {"tcp_mem": [10, 20, 100]}}
    classes = {"hard_limit": 0, "fair_share": 0}
    assert t.check(None, snap, now=0, classes=classes) == []
    assert t.check(None, snap, now=1, classes=dict(classes, fair_share=4)) == []
    assert t.check(None, snap, now=2, classes=dict(classes, fair_share=4, hard_limit=2)) == ["headroom"]
    assert t.limit("headroom") == "tcp_mem[2]"
    assert t.check(None, snap, now=3, classes=dict(classes, fair_share=4, hard_limit=5)) == []   # the same spell
    assert t.check(None, snap, now=4, classes=dict(classes, fair_share=4, hard_limit=5)) == []   # over: rearmed
    assert t.check(None, snap, now=5, classes=dict(classes, fair_share=4, hard_limit=6)) == ["headroom"]


def test_collector_names_follow_prometheus_conventions():
    counters = [0] * ev.CNT_MAX
    counters[ev.CNT_OOM_CHECK], counters[ev.CNT_OOM_CLOSE], counters[ev.CNT_OOM_TIMER] = 7, 4, 2
    state = ServeState(version="t", counters=lambda: counters, plan_methods={"pressure": "sampled"})
    fams = {f.name: f for f in TcpoomCollector(state).collect()}
    kills = {s.labels["path"]: s.value for s in fams["tcpoom_orphan_kills"].samples}
    assert kills == {"close": 4, "timer": 2, "unknown": 1}      # sums to the exact total
    for f in fams.values():
        assert f.name.startswith("tcpoom_")
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f.name
        assert "bytes" not in f.name or f.name.endswith("_bytes"), f.name


def test_parse_listen():
    assert parse_listen("127.0.0.1:9979") == ("127.0.0.1", 9979)
    assert parse_listen("[::1]:1") == ("::1", 1)
    assert parse_listen(":9979") == ("", 9979)
    for bad in ("9979", "host:x", "example.com:80"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_web_config_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(UsageError, match="not a bcrypt hash"):
        webconfig.parse({"basic_auth_users": {"u": "plain"}})
    with pytest.raises(UsageError, match="unknown key"):
        webconfig.parse({"tls_config": {}})
    with pytest.raises(UsageError, match="cert_file and key_file"):
        webconfig.parse({"tls_server_config": {"cert_file": "x"}})
    bad = tmp_path / "w.yml"
    bad.write_text("a: [")
    with pytest.raises(UsageError, match="not YAML"):
        webconfig.load(str(bad))


def test_serve_bad_web_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "w.yml"
    bad.write_text("basic_auth_users:\n  u: plain\n")
    r = subprocess.run([sys.executable, "-m", "tracer", "serve", "--web-config", str(bad), "--no-bpf"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bcrypt" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def tls_endpoint(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\nbasic_auth_users:\n  prom: '{hashed}'\n")
    web = webconfig.load(str(tmp_path / "web.yml"))
    fired = []
    reg = CollectorRegistry()
    reg.register(TcpoomCollector(ServeState(version="t")))
    ep = Endpoint("127.0.0.1:0", reg, web, on_trigger=lambda r: fired.append(r) or True)
    ep.start()
    ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    yield ep, ctx, fired
    ep.stop()


def _get(url, ctx, user=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_tls_and_basic_auth(tls_endpoint):
    ep, ctx, fired = tls_endpoint
    assert ep.url.startswith("https://127.0.0.1:")
    assert _get(ep.url, ctx)[0] == 401
    assert _get(ep.url, ctx, "prom:wrong")[0] == 401
    code, body = _get(ep.url, ctx, "prom:s3cret")
    assert code == 200 and "tcpoom_bpf_up 0.0" in body
    assert _get(ep.url, ctx, "prom:s3cret")[0] == 200     # the remembered digest
    assert _get(ep.url, ctx, "prom:wrong")[0] == 401
    import http.client
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(ep.url.replace("https", "http"), timeout=5).read()
    trig = ep.url.replace("/metrics", "/-/trigger")
    assert _get(trig, ctx, method="POST")[0] == 401
    assert _get(trig, ctx, "prom:s3cret", method="POST")[0] == 202
    assert fired == ["http"]


def test_serve_is_a_command_with_help():
    r = subprocess.run([sys.executable, "-m", "tracer", "serve", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for opt in ("--listen", "--web-config", "--state-dir", "--before", "--after", "--keep-incidents"):
        assert opt in r.stdout
    r = subprocess.run([sys.executable, "-m", "tracer", "serve", "--listen", "nowhere", "--no-bpf"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--listen nowhere" in r.stderr
    # a filter serve would not apply is refused, not accepted and ignored
    for opt in ("--cgroup", "--container"):
        r = subprocess.run([sys.executable, "-m", "tracer", "serve", opt, "x", "--no-bpf"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "PromQL" in r.stderr, r.stderr


@pytest.mark.integration
@pytest.mark.skipif(not __import__("shutil").which("prometheus"), reason="prometheus not installed")
def test_a_real_prometheus_scrapes_through_tls_and_basic_auth(tmp_path, tls_endpoint):
    """The exporters' web config, as Prometheus itself uses it: https with the
    server's CA, basic auth with the password whose bcrypt hash serve holds."""
    from prometheus_server import Prometheus
    ep, _, _ = tls_endpoint
    host, port = ep.address
    extra = (f"    scheme: https\n    tls_config:\n      ca_file: {tmp_path / 'c.pem'}\n"
             "    basic_auth:\n      username: prom\n      password: s3cret\n")
    prom = Prometheus(tmp_path, [f"127.0.0.1:{port}"], scrape_extra=extra)
    try:
        prom.wait_for('up{job="tcpoom"} == 1')
        assert prom.value("tcpoom_bpf_up") == 0
    finally:
        prom.stop()


def _cg_records(*rows):
    """rows: (family, memcg, sk_cgroup, mem_class)"""
    return ev.frame_all([ev.Event.make(family=f, memcg=m, sk_cgroup=c, mem_class=k).pack()
                         for f, m, c, k in rows])


def test_cgroup_counts_are_bounded_largest_first_with_an_other_bucket():
    from tracer.serve.cgroup_counts import CgroupCounts, OTHER as CG_OTHER
    c = CgroupCounts(limit=2)
    rows = [(ev.OOM_CHECK, 0, 7, 0)] + [(ev.MEM_EXCEED, 5, 7, ev.MEM_CLASS_MEMCG)] * 3 + \
        [(ev.MEM_EXCEED, 6, 0, ev.MEM_CLASS_HARD)] * 2 + [(ev.TW_OVERFLOW, 0, 0, 0), (ev.PRESSURE, 0, 0, 0)]
    c.add(_cg_records(*rows), len(rows))
    snap = c.snapshot()
    # memory/5 (3 events) and memory/6 (2) take the two slots; v2 7 (1 event) goes to other
    assert snap[(("memory", 5), "mem_exceed", "memcg")] == 3
    assert snap[(("memory", 6), "mem_exceed", "hard_limit")] == 2
    assert snap[(CG_OTHER, "oom_check", "")] == 1
    assert snap[(CG_OTHER, "tw_overflow", "")] == 1          # no cgroup at all
    assert c.classes == {"unknown": 0, "memcg": 3, "fair_share": 0, "hard_limit": 2}
    c.add(_cg_records((ev.OOM_CHECK, 0, 7, 0)), 1)
    assert c.snapshot()[(CG_OTHER, "oom_check", "")] == 2   # slots stay: counters never go back
    assert sorted(c.keys()) == [("memory", 5), ("memory", 6)]


def test_cgroup_slots_of_removed_idle_cgroups_are_given_back():
    from tracer.serve.cgroup_counts import CgroupCounts
    now = [0.0]
    c = CgroupCounts(limit=1, evict_s=60, clock=lambda: now[0])
    c.add(_cg_records((ev.OOM_CHECK, 5, 0, 0)), 1)
    now[0] = 30
    assert c.evict(lambda k: True) == []                    # not idle long enough
    now[0] = 100
    assert c.evict(lambda k: False) == []                   # still there
    assert c.evict(lambda k: True) == [("memory", 5)]
    c.add(_cg_records((ev.OOM_CHECK, 9, 0, 0)), 1)
    assert c.keys() == [("memory", 9)] and len(c.snapshot()) == 1


def _v2_cgroup(root, rel, sock, current, mx="max", high="max"):
    d = root / rel.strip("/")
    d.mkdir(parents=True)
    (d / "memory.stat").write_text(f"anon 0\nfile 0\nsock {sock}\nshmem 0\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.max").write_text(f"{mx}\n")
    (d / "memory.high").write_text(f"{high}\n")
    return d


def test_cgroup_socket_memory_of_the_top_and_of_those_with_events(tmp_path):
    import os
    from tracer.host.cgroups import Cgroups, Mounts
    from tracer.serve.cgroup_counts import CgroupCounts
    from tracer.serve.cgroup_memory import CgroupMemory
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    mounts = Mounts(v2=str(root), v2_controllers=["memory"])
    _v2_cgroup(root, "/big", 9000, 20000, mx=30000)
    _v2_cgroup(root, "/mid", 5000, 6000)
    _v2_cgroup(root, "/small", 10, 100, high=4096)
    ctr = "a" * 64
    busy = _v2_cgroup(root, f"/system.slice/docker-{ctr}.scope", 0, 50, mx=1000)
    mem = CgroupMemory(top=2, mounts=mounts)
    assert mem.refresh(force=True) and mem.largest == ["/big", "/mid"]
    counts = CgroupCounts(limit=4)
    counts.add(_cg_records((ev.MEM_EXCEED, os.stat(busy).st_ino, 0, ev.MEM_CLASS_MEMCG)), 1)
    state = ServeState(version="t", counters=lambda: [0] * ev.CNT_MAX, cgroup_counts=counts,
                       cgroup_names=Cgroups(mounts, pods={}), cgroup_memory=mem)
    fams = {f.name: f for f in TcpoomCollector(state).collect()}
    ev_samples = [(s.labels, s.value) for s in fams["tcpoom_cgroup_events"].samples]
    assert ev_samples == [({"cgroup": f"/system.slice/docker-{ctr}.scope", "container": f"docker:{ctr[:12]}",
                            "family": "mem_exceed", "class": "memcg"}, 1)]
    classes = {s.labels["class"]: s.value for s in fams["tcpoom_memory_refusal_events"].samples}
    assert classes == {"unknown": 0, "memcg": 1, "fair_share": 0, "hard_limit": 0}
    sock = {s.labels["cgroup"]: s.value for s in fams["tcpoom_cgroup_socket_memory_bytes"].samples}
    assert sock == {f"/system.slice/docker-{ctr}.scope": 0, "/big": 9000, "/mid": 5000}   # not /small
    head = {(s.labels["cgroup"], s.labels["limit"]): s.value
            for s in fams["tcpoom_cgroup_socket_memory_headroom_bytes"].samples}
    assert head == {(f"/system.slice/docker-{ctr}.scope", "memory.max"): 950, ("/big", "memory.max"): 10000}


def test_v1_cgroup_socket_memory_against_the_tcp_limit(tmp_path):
    from tracer.host.cgroups import Mounts
    from tracer.serve.cgroup_memory import CgroupMemory
    root = tmp_path / "memory"
    for rel, usage, limit, fail in (("a", 4096, 8192, 3), ("b", 0, 9223372036854771712, 0)):
        d = root / rel
        d.mkdir(parents=True)
        (d / "memory.kmem.tcp.usage_in_bytes").write_text(f"{usage}\n")
        (d / "memory.kmem.tcp.limit_in_bytes").write_text(f"{limit}\n")
        (d / "memory.kmem.tcp.failcnt").write_text(f"{fail}\n")
    mem = CgroupMemory(top=5, mounts=Mounts(v1_memory=str(root)))
    mem.refresh(force=True)
    assert mem.largest == ["/a"]                            # b holds no socket memory
    state = ServeState(version="t", cgroup_memory=mem)
    fams = {f.name: f for f in TcpoomCollector(state).collect()}
    head = [(s.labels, s.value) for s in fams["tcpoom_cgroup_socket_memory_headroom_bytes"].samples]
    assert head == [({"cgroup": "/a", "container": "", "limit": "memory.kmem.tcp.limit_in_bytes"}, 4096)]
    assert [s.value for s in fams["tcpoom_cgroup_socket_memory_failures"].samples] == [3]


def test_an_incident_names_the_limit_of_its_trigger():
    t = Triggers(["refusal", "headroom"], 0.1)
    assert t.limit("tw_overflow") == "tcp_max_tw_buckets"
    assert t.limit("refusal", {"memcg": 0, "hard_limit": 5}) == "tcp_mem[2]"
    t.mark({"memcg": 0, "hard_limit": 5})
    assert t.limit("refusal", {"memcg": 3, "hard_limit": 5}).startswith("the cgroup's memory limit")
    t.mark({"memcg": 3, "hard_limit": 5})
    assert t.limit("refusal", {"memcg": 3, "hard_limit": 5}) == "tcp_mem[2] or the cgroup's memory limit"
    low = {"sockstat": {"TCP": {"mem": 0, "orphan": 0, "tw": 95}}, "limits": {"tcp_max_tw_buckets": 100}}
    assert t.check(None, low, now=0) == ["headroom"]
    assert t.limit("headroom") == "tcp_max_tw_buckets"
    assert t.limit("sigusr1") is None


def test_glibc_mmap_threshold_is_pinned_unless_the_operator_set_it(monkeypatch):
    import platform
    from tracer.serve import malloc
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert malloc.pin_mmap_threshold() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    if platform.libc_ver()[0] == "glibc":
        r = subprocess.run([sys.executable, "-c", "from tracer.serve import malloc; "
                            "print(malloc.pin_mmap_threshold())"], cwd=ROOT, capture_output=True, text=True)
        assert r.stdout.strip() == "True", r.stderr
