"""`tcpoom serve` scraped by a real Prometheus during lab scenarios: the
PromQL increase of every counter equals the kernel's own counter in the lab's
namespace, and the headroom gauges equal /proc when scraped. Then the
/proc-only mode, when BPF cannot load."""
import os
import time

import pytest

from bpf_programs import gone, program_ids
from prometheus_server import Prometheus, free_port
from serve_process import Serve, sample
from scripts.lab import Lab
from tracer.host import procfs

pytestmark = pytest.mark.kernel

#: scenario -> [(series selector of a counter, TcpExt counter its increase must equal)]
CASES = {
    "tw_overflow": [
        ("tcpoom_tw_overflows_total", "TCPTimeWaitOverflow"),
        ('tcpoom_netns_events_total{{netns="{ns}",family="tw_overflow"}}', "TCPTimeWaitOverflow"),
        ('tcpoom_tcpext_total{{netns="{ns}",counter="TCPTimeWaitOverflow"}}', "TCPTimeWaitOverflow"),
    ],
    "orphans_close": [
        ("tcpoom_orphan_kills_total", "TCPAbortOnMemory"),
        ('tcpoom_netns_events_total{{netns="{ns}",family="oom_check"}}', "TCPAbortOnMemory"),
        ('tcpoom_tcpext_total{{netns="{ns}",counter="TCPAbortOnMemory"}}', "TCPAbortOnMemory"),
        ("tcpoom_orphan_kill_resets_total", "TCPAbortOnMemory"),
    ],
    # killed by the retransmission timer (softirq), not by close()
    "orphans_timer": [
        ("tcpoom_orphan_kills_total", "TCPAbortOnMemory"),
        ('tcpoom_netns_events_total{{netns="{ns}",family="oom_check"}}', "TCPAbortOnMemory"),
    ],
    # received segments dropped for memory (skb:kfree_skb), in-order queue
    "rcvbuf_drops": [
        ('tcpoom_memory_drops_total{{site="rcvq"}}', "TCPRcvQDrop"),
        ('tcpoom_tcpext_total{{netns="{ns}",counter="TCPRcvQDrop"}}', "TCPRcvQDrop"),
    ],
}
SCRAPE_S = 1.0


def _bracketed(read_proc, scrape):
    """A gauge scraped between two /proc readings lies between them (three tries:
    TCP memory moves with every other test on the host)."""
    for _ in range(3):
        a = read_proc()
        v = scrape()
        b = read_proc()
        if min(a, b) <= v <= max(a, b):
            return True
    return False


@pytest.fixture
def quiet_host():
    """No lab of another test run shrinks the host-wide tcp_mem meanwhile (a
    loopback scrape would be refused with a reset): hold the labs' host lock."""
    from scripts.lab import hostlock
    hostlock.acquire()
    yield
    hostlock.release()


@pytest.fixture
def prom_and_serve(tmp_path):
    made = {}

    def start(*serve_args):
        port = free_port()
        made["serve"] = Serve(port, *serve_args)
        made["prom"] = Prometheus(tmp_path, [f"127.0.0.1:{port}"])
        return made["prom"], made["serve"]
    yield start
    if "serve" in made:
        made["serve"].stop()
    if "prom" in made:
        made["prom"].stop()


@pytest.mark.parametrize("scenario", list(CASES))
def test_prometheus_increase_equals_the_kernel(tmp_path, prom_and_serve, scenario):
    before_ids = program_ids()
    with Lab(allow_global_sysctls=True) as lab:
        ns = str(lab.netns_inode)
        prom, serve = prom_and_serve("--netns", lab.netns_name, "--no-flight-recorder")
        loaded = program_ids() - before_ids
        prom.wait_for(f'tcpoom_tcpext_total{{netns="{ns}"}}')
        time.sleep(2 * SCRAPE_S)
        t_start = time.time()
        time.sleep(0.1)
        result = lab.run(scenario)
        time.sleep(3 * SCRAPE_S)            # scrapes after the last event
        t_end = time.time()
        assert result.ok, result.failures()
        for expr, counter in CASES[scenario]:
            q = expr.format(ns=ns)
            span = int(t_end - t_start) + 1
            # the exact increase between the two instants
            exact = prom.value(f"sum({q}) - sum({q} offset {int((t_end - t_start) * 1000)}ms)", at=t_end)
            assert exact == result.deltas[counter], (q, exact, result.deltas)
            # increase() extrapolates to the edges of its range: within one
            # scrape interval's share of the exact figure
            inc = prom.value(f"sum(increase({q}[{span}s]))", at=t_end)
            assert exact <= inc <= exact * (span + 2 * SCRAPE_S) / max(span - 2 * SCRAPE_S, 1) + 1, (q, inc, exact)
        assert prom.value("sum(tcpoom_ring_lost_events_total)", at=t_end) == 0
        assert prom.value("tcpoom_bpf_up", at=t_end) == 1
        # headroom as /proc says, at t_end (the lab's sysctls are restored by then)
        limits = procfs.tcp_limits(lab.netns_name)
        page = limits.page_size
        for i, name in enumerate(("min", "pressure", "max")):
            assert prom.value(f'tcpoom_tcp_mem_threshold_bytes{{threshold="{name}"}}', at=t_end) == \
                limits.tcp_mem[i] * page
        for shift in (0, 1, 2):
            assert prom.value(f'tcpoom_orphan_sockets_limit{{shift="{shift}"}}', at=t_end) == \
                limits.tcp_max_orphans >> shift
        assert prom.value(f'tcpoom_tw_buckets_limit{{netns="{ns}"}}', at=t_end) == limits.tcp_max_tw_buckets
        tw_now = procfs.read_sockstat(lab.netns_name)["TCP"]["tw"]
        assert prom.value(f'tcpoom_tw_buckets{{netns="{ns}"}}') == tw_now
        # the moving gauges, scraped directly between two readings of /proc
        text = {}

        def scrape(name, **labels):
            text["t"] = serve.scrape()
            return sample(text["t"], name, **labels)
        assert _bracketed(lambda: procfs.read_sockstat()["TCP"]["mem"] * page,
                          lambda: scrape("tcpoom_tcp_memory_bytes"))
        assert _bracketed(lambda: procfs.read_sockstat()["TCP"]["orphan"],
                          lambda: scrape("tcpoom_orphan_sockets"))
        assert _bracketed(lambda: int(bool(procfs.tcp_memory_pressure())),
                          lambda: scrape("tcpoom_tcp_memory_pressure"))
        code, err = serve.stop()
    assert code == 0, err
    assert "stopped (SIGTERM)" in err
    assert gone(loaded), "serve left BPF programs loaded"


def test_proc_only_when_bpf_cannot_load(tmp_path, quiet_host):
    """Without the capabilities BPF needs (root with an empty capability
    bounding set, as in a container that dropped them), serve says so in the
    log and in tcpoom_bpf_up, and keeps exporting the headroom."""
    import ctypes
    port = free_port()

    def drop():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in range(64):
            libc.prctl(24, cap, 0, 0, 0)        # PR_CAPBSET_DROP: gone at exec
    serve = Serve(port, "--no-flight-recorder", preexec_fn=drop)
    try:
        text = serve.scrape()
    finally:
        code, err = serve.stop()
    assert "BPF not loaded" in err and "serving /proc figures only" in err, err
    assert sample(text, "tcpoom_bpf_up") == 0
    assert sample(text, "tcpoom_tcp_mem_threshold_bytes", threshold="max") == \
        procfs.tcp_limits().tcp_mem[2] * os.sysconf("SC_PAGE_SIZE")
    assert sample(text, "tcpoom_orphan_sockets") is not None
    own = str(os.stat("/proc/self/ns/net").st_ino)
    assert sample(text, "tcpoom_tw_buckets_limit", netns=own) == int(procfs.read_sysctl("net.ipv4.tcp_max_tw_buckets"))
    assert sample(text, "tcpoom_tw_overflows_total") is None      # no in-kernel counts: not faked
    assert code == 0


def test_every_dashboard_query_returns_data_after_a_lab_run(tmp_path, prom_and_serve):
    """The Grafana dashboard's queries against a real Prometheus that scraped
    serve (unfiltered, flight recorder on) through a lab run and an incident."""
    import urllib.request
    from test_deploy import dashboard_queries
    with Lab(allow_global_sysctls=True) as lab:
        prom, serve = prom_and_serve("--state-dir", str(tmp_path / "state"), "--after", "1",
                                     "--trigger", "http", "--no-reports")
        prom.wait_for("tcpoom_bpf_up")
        lab.run("tw_overflow")
        req = urllib.request.Request(serve.url.replace("/metrics", "/-/trigger"), method="POST")
        assert urllib.request.urlopen(req, timeout=10).status == 202
        time.sleep(4 * SCRAPE_S)
        empty = [(title, q) for title, q in dashboard_queries() if not prom.query(q)]
        assert prom.value(f'sum(tcpoom_tw_buckets{{netns="{lab.netns_inode}"}})') is not None
    assert not empty, empty
