"""tcpoom doctor: the rules from made-up figures, the command's exit codes and JSON, and
real conditions made in the kernel (a full TIME_WAIT table, too many orphans, TCP memory
above tcp_mem[2]) under lowered sysctls that are always put back.
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from tracer.cli import app as cli
from tracer.host import netns, procfs
from tracer.analysis import doctor as rules
from tracer.cli.commands import doctor as command

MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096


def healthy(**changes) -> rules.Figures:
    """A quiet 16 GiB host: a few hundred connections, nothing near a limit."""
    fig = rules.Figures(
        page_size=PAGE, inuse=90, inuse6=5, orphans=3, tw=150, alloc=100, mem_pages=900,
        pressure=False, tcp_mem=(188_000, 250_000, 376_000), tcp_max_orphans=65536,
        tcp_max_tw_buckets=65536, tcp_rmem=(4096, 131072, 6 * MiB),
        tcp_wmem=(4096, 16384, 4 * MiB), tcp_tw_reuse=2, mem_total=16 * GiB,
        counters_before={name: 0 for name in rules.COUNTERS},
        counters_after={name: 0 for name in rules.COUNTERS}, interval_s=1.0)
    for key, value in changes.items():
        setattr(fig, key, value)
    return fig


def moved(**deltas):
    """counters_before/after where the named counters moved by the given amounts."""
    before = {name: 100 for name in rules.COUNTERS}
    after = dict(before)
    for name, delta in deltas.items():
        after[name] += delta
    return {"counters_before": before, "counters_after": after}


def by_id(diagnosis, finding_id):
    found = [f for f in diagnosis.findings if f["id"] == finding_id]
    assert found, [f["id"] for f in diagnosis.findings]
    return found[0]


def ids(diagnosis):
    return [f["id"] for f in diagnosis.findings]


# ---------------------------------------------------------------------------------------
# the rules, from made-up figures

def test_healthy_host_is_ok_with_exit_0_and_no_snippet():
    d = rules.diagnose(healthy())
    assert d.severity == "ok" and d.exit_code == 0
    assert ids(d) == ["healthy"]
    assert d.snippet == "" and d.not_checked == []


def test_orphans_at_60_percent_are_killed_on_the_timer_path():
    # 600 << 1 = 1200 > 1000: tcp_out_of_resources() with shift 1 kills them.
    d = rules.diagnose(healthy(orphans=600, tcp_max_orphans=1000))
    f = by_id(d, "orphans")
    assert f["severity"] == "warning" and d.exit_code == 1
    assert f["limit"] == "net.ipv4.tcp_max_orphans"
    assert "600 << 1 = 1200 > 1000" in f["title"]
    assert any("shift 1" in e and "500" in e for e in f["evidence"])
    # four times the peak, for the 4x penalty
    assert "net.ipv4.tcp_max_orphans = 3072" in d.snippet
    assert "/etc/sysctl.d/" in d.snippet


def test_orphans_above_a_quarter_and_above_the_limit():
    quarter = rules.diagnose(healthy(orphans=300, tcp_max_orphans=1000))
    assert by_id(quarter, "orphans")["severity"] == "warning"
    assert "300 << 2 = 1200 > 1000" in by_id(quarter, "orphans")["title"]
    # exactly a quarter is not above it: `orphans << shift > max` is strict
    assert "orphans" not in ids(rules.diagnose(healthy(orphans=250, tcp_max_orphans=1000)))
    over = rules.diagnose(healthy(orphans=1001, tcp_max_orphans=1000))
    assert by_id(over, "orphans")["severity"] == "critical" and over.exit_code == 2


def test_orphan_advice_is_capped_by_memory():
    # 4x a huge peak would pin more than half of a 1 GiB host at 64 KiB an orphan.
    d = rules.diagnose(healthy(orphans=9000, tcp_max_orphans=8192, mem_total=1 * GiB))
    assert "tcp_max_orphans" not in d.snippet
    assert "not the fix here" in " ".join(by_id(d, "orphans")["advice"])
    d = rules.diagnose(healthy(orphans=3000, tcp_max_orphans=4096, mem_total=1 * GiB))
    assert "net.ipv4.tcp_max_orphans = 8192" in d.snippet      # 12288 wanted, capped
    assert "capped at half of memory" in " ".join(by_id(d, "orphans")["advice"])


def test_memory_above_the_pressure_threshold_is_a_warning_in_pages_and_bytes():
    d = rules.diagnose(healthy(mem_pages=260_000, pressure=True))
    f = by_id(d, "tcp_mem")
    assert f["severity"] == "warning" and d.exit_code == 1
    assert f["limit"] == "net.ipv4.tcp_mem[1]"
    evidence = " ".join(f["evidence"])
    assert "260000 pages (1016 MiB)" in evidence
    assert "in pages of 4096 bytes, not bytes" in evidence
    # 1.5x what is in use, in pages
    assert "net.ipv4.tcp_mem = 195072 292608 390144" in d.snippet
    assert "PAGES" in " ".join(f["advice"])


def test_memory_above_the_hard_limit_is_critical():
    d = rules.diagnose(healthy(mem_pages=400_000, pressure=True))
    f = by_id(d, "tcp_mem")
    assert f["severity"] == "critical" and d.exit_code == 2 and d.severity == "critical"
    assert f["limit"] == "net.ipv4.tcp_mem[2]"
    assert "400000 pages > tcp_mem[2] 376000" in f["title"]
    assert "slow consumers" in f["advice"][0]
    assert d.findings[0] is f  # worst first


def test_tcp_mem_lowered_far_below_the_kernels_default_is_called_out():
    # tcp_init_mem(): nr_free_buffer_pages()/16 = 262144 on 16 GiB, high = 3/4 of it x 2
    assert rules.kernel_default_tcp_mem(16 * GiB, PAGE) == (196608, 262144, 393216)
    d = rules.diagnose(healthy(tcp_mem=(10, 20, 40), mem_pages=318))
    f = by_id(d, "tcp_mem")
    assert f["severity"] == "critical"
    assert "find what set it" in f["advice"][0]
    assert "net.ipv4.tcp_mem = 196608 294912 393216" in d.snippet


def test_stale_pressure_below_the_threshold_is_still_a_warning():
    d = rules.diagnose(healthy(mem_pages=100, pressure=True))
    f = by_id(d, "tcp_mem")
    assert f["severity"] == "warning" and "memory-pressure mode" in f["title"]
    assert "below tcp_mem[0]" in f["title"]


def test_time_wait_at_the_limit_of_its_namespace():
    d = rules.diagnose(healthy(tw=5, tcp_max_tw_buckets=5, own_netns=False,
                               netns_label="lab", **moved(TCPTimeWaitOverflow=15)))
    f = by_id(d, "time_wait")
    assert f["severity"] == "warning" and d.exit_code == 1
    assert f["limit"] == "net.ipv4.tcp_max_tw_buckets"
    assert "namespace lab" in f["title"] and "5 >= tcp_max_tw_buckets 5" in f["title"]
    assert "tw_overflow" in ids(d)
    # demand: 5 held + 15 refused per second over a 60 s lifetime = 905; twice that
    assert "net.ipv4.tcp_max_tw_buckets = 2048" in d.snippet
    assert "net.ipv4.tcp_tw_reuse = 1" in d.snippet
    advice = " ".join(f["advice"])
    assert "Never tcp_tw_recycle" in advice and "ip netns exec" in advice


def test_worst_case_buffers_above_tcp_mem_high_are_reported_as_a_risk():
    # 1000 sockets x (6 MiB + 4 MiB) = ~9.8 GiB against 376000 pages = ~1.4 GiB
    d = rules.diagnose(healthy(alloc=1000))
    f = by_id(d, "buffer_worst_case")
    assert f["severity"] == "info" and d.exit_code == 0  # overcommit by design
    assert "1000 TCP sockets" in f["evidence"][0]
    worst = rules.worst_cases(healthy(alloc=1000))
    assert worst["buffer_bytes"] == 1000 * 10 * MiB > worst["tcp_mem_high_bytes"]


def test_orphan_memory_worst_case_against_memtotal():
    assert "orphan_memory" not in ids(rules.diagnose(healthy()))   # 4 GiB of 16 GiB
    d = rules.diagnose(healthy(tcp_max_orphans=262144))            # 16 GiB of 16 GiB
    assert by_id(d, "orphan_memory")["severity"] == "info"
    d = rules.diagnose(healthy(tcp_max_orphans=524288))            # 32 GiB of 16 GiB
    assert by_id(d, "orphan_memory")["severity"] == "warning"


def test_counters_that_moved_during_the_interval():
    d = rules.diagnose(healthy(**moved(TCPAbortOnMemory=7, TCPRcvQDrop=3, PruneCalled=2,
                                       TCPMemoryPressures=1, TCPAbortOnTimeout=1)))
    assert by_id(d, "aborts_on_memory")["severity"] == "critical" and d.exit_code == 2
    assert "TCPRcvQDrop +3" in by_id(d, "receive_drops")["title"]
    assert by_id(d, "pressure_entered")["severity"] == "warning"
    assert by_id(d, "aborts_on_timeout")["severity"] == "info"
    table = rules.counter_table(healthy(**moved(TCPAbortOnMemory=7)))
    assert table["TCPAbortOnMemory"] == {"total": 107, "delta": 7}
    # totals that did not move are history, not trouble
    quiet = rules.diagnose(healthy(**moved()))
    assert by_id(quiet, "history")["severity"] == "info" and quiet.exit_code == 0


def test_missing_figures_skip_rules_and_say_so():
    d = rules.diagnose(rules.Figures())
    assert d.exit_code == 0 and ids(d) == ["healthy"]
    assert len(d.not_checked) == 5
    assert any(n.startswith("time_wait") for n in d.not_checked)


# ---------------------------------------------------------------------------------------
# the command: exit codes through cli.main(), JSON keys, text

def fake_report(monkeypatch, fig):
    monkeypatch.setattr(command, "read_figures", lambda *args: fig)


def test_verdict_exit_codes_come_out_of_cli_main_without_an_error(monkeypatch, capsys):
    for fig, code in ((healthy(), 0), (healthy(tw=10, tcp_max_tw_buckets=10), 1),
                      (healthy(mem_pages=400_000), 2)):
        fake_report(monkeypatch, fig)
        assert cli.main(["doctor", "--interval", "0", "--no-plan"]) == code
        out = capsys.readouterr()
        assert out.err == ""           # a verdict is not an error
        assert f"(exit code {code})" in out.out


def test_usage_errors_exit_3_unknown_one_line_each(capsys):
    # README and the help: doctor's usage errors are UNKNOWN (3), as a monitoring
    # plugin's, never 2 (critical); one line on stderr, an empty stdout
    for args in (["--interval", "-1"], ["--no-such-option"], ["--netns", "no-such-namespace-here"]):
        assert cli.main(["doctor", *args]) == 3
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "usage" in out.err
    assert "Traceback" not in out.err


def test_help_explains_the_exit_codes_and_the_json_keys(capsys):
    assert cli.main(["doctor", "--help"]) == 0
    text = capsys.readouterr().out
    for words in ("0  healthy", "1  warning", "2  critical", "3  unknown", "--netns",
                  "--interval", "--json"):
        assert words in text


JSON_KEYS = {"schema", "verdict", "exit_code", "host", "netns", "tcp", "limits", "worst_case",
             "counters", "findings", "sysctl_snippet", "plan", "unavailable", "not_checked"}


def test_json_keys_are_the_documented_ones(monkeypatch, capsys):
    fake_report(monkeypatch, healthy(mem_pages=400_000))
    assert cli.main(["doctor", "--json", "--interval", "0", "--no-plan"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert set(report) == JSON_KEYS
    for key in JSON_KEYS:
        assert f"  {key} " in command.__doc__
    assert report["verdict"] == "critical" and report["exit_code"] == 2
    assert report["limits"]["tcp_mem_bytes"] == [v * PAGE for v in (188_000, 250_000, 376_000)]
    assert report["limits"]["orphan_kill_above"] == {"shift0": 65536, "shift1": 32768,
                                                     "shift2": 16384}
    assert set(report["counters"]["TcpExt"]) == set(rules.COUNTERS)
    finding = report["findings"][0]
    assert set(finding) == {"id", "severity", "limit", "title", "evidence", "advice", "why"}
    assert finding["limit"] == "net.ipv4.tcp_mem[2]"


def test_plan_is_reported_per_family_with_its_sampled_fields(monkeypatch, capsys):
    fake_report(monkeypatch, healthy())
    privileges = {"bpf": False, "sys_admin": False, "kallsyms_addresses": False}
    monkeypatch.setattr(command, "_privileges", lambda: privileges)
    assert cli.main(["doctor", "--json", "--interval", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    plan = report["plan"]
    assert plan["available"] and plan["partial"]
    assert set(plan["families"]) == {"oom_check", "tw_overflow", "mem_exceed", "pressure", "mem_drop"}
    for fam in plan["families"].values():
        assert set(fam) == {"method", "target", "fields", "sampled", "blind_spot"}
        assert fam["sampled"] == [k for k, v in fam["fields"].items() if v == "sampled"]
    whats = " ".join(u["what"] for u in report["unavailable"])
    assert "fentry test load" in whats and "kallsyms addresses" in whats



def test_plan_loads_no_bpf_and_says_fentry_was_not_tested(monkeypatch, capsys):
    """doctor's promise: no BPF. With BPF privileges and no per-boot cache, the
    fentry test load other commands make is not made: the plan says so."""
    from tracer.kernel import facts as kernel_facts, libbpf
    loads = []
    monkeypatch.setattr(libbpf, "try_load_fentry", lambda target: loads.append(target) or 0)
    monkeypatch.setenv("TCPOOM_NO_FACTS_CACHE", "1")
    monkeypatch.setattr(kernel_facts.os, "geteuid", lambda: 0)
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF here: fentry is out of the question anyway")
    fake_report(monkeypatch, healthy())
    monkeypatch.setattr(command, "_privileges",
                        lambda: {"bpf": True, "sys_admin": True, "kallsyms_addresses": True})
    assert cli.main(["doctor", "--json", "--interval", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert loads == []
    assert report["plan"]["partial"]
    assert any("fentry not tested" in w for w in report["plan"]["partial_why"])
    assert "fentry" not in {fam["method"] for fam in report["plan"]["families"].values()}

# ---------------------------------------------------------------------------------------
# kernel: real conditions, under lowered sysctls that are always restored

GLOBAL_SYSCTLS = ("net.ipv4.tcp_mem", "net.ipv4.tcp_max_orphans")


def doctor(*args, no_caps=False, timeout=30):
    """`python3 -m tracer doctor ARGS` from the repository root, as a user runs it."""
    cmd = [sys.executable, "-m", "tracer", "doctor", *args]
    if no_caps:
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def doctor_json(*args, **kwargs):
    proc = doctor("--json", *args, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert proc.returncode == report["exit_code"], proc.stderr
    return proc.returncode, report


def _namespaces():
    return set(os.listdir(netns.NETNS_RUN_DIR)) if os.path.isdir(netns.NETNS_RUN_DIR) else set()


def _wait_for_other_labs(timeout_s=120.0):
    """Other labs (another test run on this host) may hold host-wide sysctls lowered:
    starting now would save their values as the ones to restore."""
    from scripts.lab.sysctls import RECOVERY_FILE, process_alive
    deadline = time.monotonic() + timeout_s
    while os.path.exists(RECOVERY_FILE):
        try:
            with open(RECOVERY_FILE) as fh:
                pid = json.load(fh).get("pid", 0)
        except (OSError, ValueError):
            pid = 0
        if not pid or not process_alive(pid) or pid == os.getpid():
            return  # a killed lab's leftovers: the next Lab puts them back
        assert time.monotonic() < deadline, f"lab process {pid} keeps host-wide sysctls changed"
        time.sleep(0.2)


@pytest.fixture
def host_left_as_found():
    """Fail the test if a host-wide sysctl stays changed or a namespace is left behind."""
    _wait_for_other_labs()
    before = {name: procfs.read_sysctl(name) for name in GLOBAL_SYSCTLS}
    namespaces = _namespaces()
    yield before
    assert {name: procfs.read_sysctl(name) for name in GLOBAL_SYSCTLS} == before
    assert _namespaces() <= namespaces


def _doctor_while_lowered(lab, name, value, cap_s, report_value, attempts=3):
    """Run doctor with host-wide sysctl `name` lowered to `value` for at most `cap_s`.

    A watchdog process puts it back after cap_s whatever happens here; on a loaded host
    doctor may start too late and read the restored value: then try again.
    """
    for _ in range(attempts):
        started = time.monotonic()
        lab.sysctls.set_for_at_most(name, value, cap_s)
        try:
            code, report = doctor_json("--interval", "0.2", "--no-plan", timeout=20)
        finally:
            lab.sysctls.restore(name)
        lowered_for = lab.sysctls.restored_at[(name, None)] - started
        assert lowered_for <= cap_s + 0.05
        if report_value(report) == value:
            return code, report, lowered_for
        time.sleep(0.5)
    raise AssertionError(f"doctor never ran while {name} was {value} (host too slow?)")


def _summary(report):
    return f"exit {report['exit_code']}: " + "; ".join(
        f"[{f['severity']}] {f['id']}: {f['title']}" for f in report["findings"])


def _lab(**kwargs):
    from scripts.lab import Lab
    return Lab(prefix="tcpoom-doctor-", **kwargs)


@pytest.mark.kernel
def test_time_wait_table_full_in_a_private_namespace(host_left_as_found):
    from scripts.lab import sockets
    buckets = 5
    stop = threading.Event()
    with _lab() as lab:
        # tcp_max_tw_buckets is per namespace (4.11+): this changes nothing host-wide.
        lab.sysctls.set("net.ipv4.tcp_max_tw_buckets", buckets, lab.netns_name)

        def churn():
            # Client closes first, so it goes FIN_WAIT2 -> TIME_WAIT; beyond the buckets
            # inet_twsk_alloc() fails and the connection just closes (TCPTimeWaitOverflow).
            server = sockets.listener(backlog=16)
            try:
                for i in range(2000):
                    if stop.is_set() and i >= 20:
                        return
                    client, accepted = sockets.connect_pair(server)
                    client.close()
                    accepted.recv(1)
                    sockets.close_all([accepted])
                    time.sleep(0.005)
            finally:
                server.close()

        worker = threading.Thread(target=netns.run_in_netns, args=(lab.netns_name, churn))
        worker.start()
        try:
            # connections are refused their bucket before and during doctor's interval
            assert sockets.wait_until(
                lambda: procfs.read_sockstat(lab.netns_name)["TCP"]["tw"] >= buckets, 5.0)
            code, report = doctor_json("--netns", lab.netns_name, "--interval", "1")
        finally:
            stop.set()
            worker.join(timeout=15)
    assert report["netns"]["own"] is False and report["netns"]["requested"] == lab.netns_name
    assert report["tcp"]["tw"] == buckets
    assert report["limits"]["tcp_max_tw_buckets"] == buckets
    f = [f for f in report["findings"] if f["id"] == "time_wait"][0]
    assert f["severity"] == "warning" and f["limit"] == "net.ipv4.tcp_max_tw_buckets"
    assert report["counters"]["TcpExt"]["TCPTimeWaitOverflow"]["delta"] > 0
    assert "tw_overflow" in [f["id"] for f in report["findings"]]
    assert "net.ipv4.tcp_max_tw_buckets = " in report["sysctl_snippet"]
    # 1 (warning) unless something host-wide was critical at the same moment
    assert code in (1, 2) and (code == 2) == (report["verdict"] == "critical")
    print("\n", _summary(report))


@pytest.mark.kernel
def test_orphans_above_a_lowered_tcp_max_orphans(host_left_as_found):
    from scripts.lab import sockets
    import socket as so
    count = 8
    with _lab(allow_global_sysctls=True) as lab:
        def make_orphans():
            # Closed with nothing unsent and TCP_LINGER2 at 120 s, a client sits in
            # FIN_WAIT2 as a full orphan with no retransmission or probe timer, so nothing
            # calls tcp_check_oom() for it: it is counted, never killed.
            server = sockets.listener(backlog=count)
            peers = []
            try:
                for _ in range(count):
                    client, accepted = sockets.connect_pair(server)
                    client.setsockopt(so.IPPROTO_TCP, so.TCP_LINGER2, 120)
                    client.close()
                    peers.append(accepted)
            except BaseException:
                sockets.close_all(peers)
                raise
            finally:
                server.close()
            return peers

        peers = netns.run_in_netns(lab.netns_name, make_orphans, timeout=10)
        try:
            orphans = procfs.read_sockstat()["TCP"]["orphan"]
            assert orphans >= count
            limit = orphans // 2
            # Host-wide: every orphan-to-be is reset while it is this low, so a watchdog
            # puts it back after 3 s whatever happens to this process.
            code, report, lowered_for = _doctor_while_lowered(
                lab, "net.ipv4.tcp_max_orphans", limit, 3.0,
                lambda r: r["limits"]["tcp_max_orphans"])
        finally:
            sockets.close_all(peers)   # their FIN moves the orphans on to TIME_WAIT
    assert report["limits"]["tcp_max_orphans"] == limit
    assert report["tcp"]["orphan"] > limit
    f = [f for f in report["findings"] if f["id"] == "orphans"][0]
    assert f["severity"] == "critical" and f["limit"] == "net.ipv4.tcp_max_orphans"
    assert code == 2 and report["verdict"] == "critical"
    print(f"\ntcp_max_orphans lowered for {lowered_for:.2f} s;", _summary(report))


@pytest.mark.kernel
def test_tcp_memory_above_a_lowered_tcp_mem(host_left_as_found):
    from scripts.lab import sockets
    count = 50
    tiny = (10, 20, 40)
    with _lab(allow_global_sysctls=True) as lab:
        # Receivers that never read, senders that queue what they can: memory held.
        server, pairs = netns.run_in_netns(
            lab.netns_name, lambda: sockets.open_pairs(count, rcvbuf=4096), timeout=10)
        try:
            for client, _ in pairs:
                sockets.send_until_full(client, 1 * MiB)
            held = procfs.read_sockstat()["TCP"]["mem"]
            assert held > tiny[2], f"only {held} pages held"
            # tcp_mem is host-wide: at most 2 s this low (a watchdog process restores it).
            code, report, tiny_for = _doctor_while_lowered(
                lab, "net.ipv4.tcp_mem", " ".join(map(str, tiny)), 2.0,
                lambda r: " ".join(map(str, r["limits"]["tcp_mem_pages"])))
        finally:
            sockets.close_all(pairs)
            server.close()
        # Pressure ends when a socket frees memory below tcp_mem[0]: closing ours does.
        sockets.wait_until(lambda: procfs.tcp_memory_pressure() is not True, timeout_s=2.0)
    assert report["limits"]["tcp_mem_pages"] == list(tiny)
    assert report["tcp"]["mem_pages"] > tiny[2]
    f = [f for f in report["findings"] if f["id"] == "tcp_mem"][0]
    assert f["severity"] == "critical" and f["limit"] == "net.ipv4.tcp_mem[2]"
    assert any("not bytes" in e for e in f["evidence"])
    assert "net.ipv4.tcp_mem = " in report["sysctl_snippet"]
    assert code == 2 and report["verdict"] == "critical"
    print(f"\ntcp_mem lowered for {tiny_for:.2f} s;", _summary(report))


@pytest.mark.kernel
def test_without_capabilities_it_works_and_says_what_was_unavailable(host_left_as_found):
    code, report = doctor_json("--interval", "0.2", no_caps=True)
    assert code in (0, 1, 2)
    assert report["host"]["privileges"] == {"sys_admin": False, "bpf": False,
                                            "kallsyms_addresses": False}
    # /proc/net and the sysctls are world-readable: every rule ran
    assert report["not_checked"] == []
    assert report["tcp"]["mem_pages"] is not None and report["limits"]["tcp_mem_pages"]
    assert report["plan"]["available"] and report["plan"]["partial"]
    whats = " ".join(u["what"] for u in report["unavailable"])
    assert "fentry test load" in whats and "kallsyms addresses" in whats

    # Another namespace cannot be entered without CAP_SYS_ADMIN: its own figures are
    # missing, the host-wide ones are still read.
    with netns.temporary("tcpoom-doctor-") as name:
        code, report = doctor_json("--netns", name, "--interval", "0", "--no-plan",
                                   no_caps=True)
        text = doctor("--netns", name, "--interval", "0", "--no-plan", no_caps=True)
    assert code in (0, 1, 2)
    assert report["tcp"]["tw"] is None and report["counters"]["TcpExt"]["TCPAbortOnMemory"] \
        == {"total": None, "delta": None}
    assert report["tcp"]["orphan"] is not None and report["limits"]["tcp_max_orphans"]
    assert any(u["what"] == f"namespace {name}" and "CAP_SYS_ADMIN" in u["why"]
               for u in report["unavailable"])
    assert any(n.startswith("time_wait") for n in report["not_checked"])
    assert "Not available" in text.stdout and "CAP_SYS_ADMIN" in text.stdout


def test_memcg_at_its_tcp_limit_is_named_with_its_limit_and_not_tcp_mem():
    memcg = {"path": "/system.slice/shop.service", "version": "v1", "sock": 1 * MiB,
             "limit": 1 * MiB, "failcnt": 12, "peak": 1 * MiB, "high": None, "usage": None,
             "limit_name": "memory.kmem.tcp.limit_in_bytes"}
    d = rules.diagnose(healthy(memcgs=[memcg]))
    f = by_id(d, "memcg")
    assert f["severity"] == "critical" and d.exit_code == rules.EXIT_CODES["critical"]
    assert f["limit"] == "memory.kmem.tcp.limit_in_bytes of /system.slice/shop.service"
    assert any("failcnt 12" in e for e in f["evidence"])
    assert "tcp_mem" not in d.snippet                 # host tcp_mem is not the lever
    assert "does not help" in " ".join(f["advice"])


def test_memcg_v2_well_below_memory_max_is_quiet():
    memcg = {"path": "/app.slice", "version": "v2", "sock": 4096, "limit": 1 << 30,
             "usage": 10 * MiB, "failcnt": None, "peak": None, "high": None,
             "limit_name": "memory.max"}
    assert ids(rules.diagnose(healthy(memcgs=[memcg]))) == ["healthy"]


def test_memcg_v2_past_memory_max_shows_its_memory_events():
    """A v2 cgroup whose slow reader was charged past memory.max in softirq (as the
    6.1/6.12 guests show: tests/test_vm_memcg_v2.py): named, over its limit, with
    memory.events, and the lever is memory.max, not tcp_mem."""
    memcg = {"path": "/tcpoom-lab.slice/reader.service", "version": "v2", "sock": 20 * MiB,
             "limit": 11 * MiB, "usage": 30 * MiB, "failcnt": None, "peak": None, "high": None,
             "limit_name": "memory.max", "max_events": 321, "oom_events": 0, "oom_kills": 0}
    d = rules.diagnose(healthy(memcgs=[memcg]))
    f = by_id(d, "memcg")
    assert f["severity"] == "critical" and f["limit"] == "memory.max of /tcpoom-lab.slice/reader.service"
    ev = " ".join(f["evidence"])
    assert "memory.events max 321, oom 0" in ev and "19.0 MiB above memory.max" in ev
    assert "tcp_mem" not in d.snippet
