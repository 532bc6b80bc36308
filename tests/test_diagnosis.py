"""Advice never makes things worse: no sysctl in the snippet or the prose is set
below the host's value at the start of the recording, one limit at a time, and
a limit lowered while the events happened is named as the thing to find."""
import re

import pytest

from tracer.analysis import diagnosis

TW_START, ORPHANS_START, TCP_MEM_START = 131072, 131072, [287898, 383867, 575796]


def model(by_family=None, by_verdict=None, peaks=None, during=None, **limits):
    lim = {"tcp_max_tw_buckets": TW_START, "tcp_max_orphans": ORPHANS_START, "tcp_mem": TCP_MEM_START,
           "tcp_rmem": [4096, 131072, 6291456], "tcp_wmem": [4096, 16384, 4194304], "page_size": 4096}
    lim.update(limits)
    return {"limits": lim, "limits_during_events": during or {},
            "events": {"by_family": by_family or {}, "by_verdict": by_verdict or {},
                       "oom_callers": {"close": 40}},
            "peaks": peaks or {}, "top": {"local_ports": [], "remote_peers": []},
            "distributions": {"shift": {"0": 1}}, "holders": {"processes": []}, "loss": {}, "plan": {}}


def snippet_values(text):
    return {k: [int(x) for x in v.split()] for k, v in re.findall(r"net\.ipv4\.(\w+) = ([\d ]+)", text)}


def prose(findings):
    return " ".join(" ".join(f["evidence"] + f["advice"]) for f in findings)


def test_raise_only_is_the_one_rule():
    assert diagnosis.raise_only(1024, 131072) is None
    assert diagnosis.raise_only(262144, 131072) == 262144
    assert diagnosis.raise_only(1024, None) == 1024
    assert diagnosis.raise_only([10, 20, 40], [100, 200, 300]) is None
    assert diagnosis.raise_only([10, 20, 400], [100, 200, 300]) == [100, 200, 400]


def test_tw_buckets_never_lowered_and_a_lowered_namespace_is_named():
    # the lab namespace had tcp_max_tw_buckets=5, the host 131072 at the start
    m = model({"tw_overflow": 55}, peaks={"tw": {"value": 5, "limit": 5, "at": "t"}},
              during={"tcp_max_tw_buckets": 5})
    findings, snippet = diagnosis.diagnose(m, {})
    assert "tcp_max_tw_buckets" not in snippet_values(snippet)
    text = prose(findings)
    assert "raise net.ipv4.tcp_max_tw_buckets" not in text
    assert "was 5 when the overflows happened but 131072 at the start" in text
    assert "against tcp_max_tw_buckets 5 in force then, 131072 at the start" in text


def test_tw_buckets_raised_above_the_start_value_when_needed():
    m = model({"tw_overflow": 9}, peaks={"tw": {"value": 200000, "limit": TW_START, "at": "t"}})
    _, snippet = diagnosis.diagnose(m, {})
    assert snippet_values(snippet)["tcp_max_tw_buckets"] == [400384]


def test_max_orphans_never_lowered():
    m = model(by_verdict={"oom_check": {"too_many_orphans": 40}},
              peaks={"orphans": {"value": 1, "source": "sampled", "at": "t"}}, during={"tcp_max_orphans": 0})
    findings, snippet = diagnosis.diagnose(m, {})
    assert "tcp_max_orphans" not in snippet_values(snippet)
    assert "was 0 when the sockets were killed but is 131072" in prose(findings)
    assert "{" not in prose(findings)            # callers: close 40, not a Python dict


def test_max_orphans_raised_from_the_start_value():
    m = model(by_verdict={"oom_check": {"too_many_orphans": 40}},
              peaks={"orphans": {"value": 50000, "source": "exact", "at": "t"}}, tcp_max_orphans=8192)
    _, snippet = diagnosis.diagnose(m, {})
    assert snippet_values(snippet)["tcp_max_orphans"] == [200704]


@pytest.mark.parametrize("peak_pages", [2592, 100, 400000])
def test_tcp_mem_never_lowered_member_by_member(peak_pages):
    m = model({"mem_exceed": 40}, peaks={"memory_pages": {"value": peak_pages, "at": "t"}})
    findings, snippet = diagnosis.diagnose(m, {})
    got = snippet_values(snippet).get("tcp_mem")
    if got is not None:
        assert all(g >= s for g, s in zip(got, TCP_MEM_START)) and got != TCP_MEM_START
    else:
        assert "raise net.ipv4.tcp_mem" not in prose(findings)


def test_tcp_mem_lowered_while_refused_is_named_not_advised():
    m = model({"mem_exceed": 40}, peaks={"memory_pages": {"value": 2592, "at": "t"}},
              during={"tcp_mem_high": 40})
    findings, snippet = diagnosis.diagnose(m, {})
    assert "tcp_mem" not in snippet_values(snippet)
    assert "tcp_mem[2] was 40 pages while the refusals happened, 575796" in prose(findings)


def test_rmem_wmem_are_never_advised():
    # the per-socket maxima are named as a factor, never set: nothing to lower
    m = model({"mem_exceed": 40, "tw_overflow": 1}, peaks={"memory_pages": {"value": 900000, "at": "t"}})
    _, snippet = diagnosis.diagnose(m, {})
    assert not {"tcp_rmem", "tcp_wmem"} & set(snippet_values(snippet))


def test_max_orphans_lowered_and_too_small_says_both():
    m = model(by_verdict={"oom_check": {"too_many_orphans": 40}},
              peaks={"orphans": {"value": 50000, "source": "exact", "at": "t"}}, during={"tcp_max_orphans": 0})
    findings, snippet = diagnosis.diagnose(m, {})
    assert snippet_values(snippet)["tcp_max_orphans"] == [200704]
    text = prose(findings)
    assert "was 0 when the sockets were killed but is 131072 outside that moment: find what lowered it" in text
    assert "four times the peak to absorb the 4x penalty: 200704" in text


def _drops_model(causes, sites=None, **kw):
    m = model({"mem_drop": sum(causes.values())}, **kw)
    m["top"]["processes"] = [{"pid": 42, "comm": "reader", "events": 20}]
    m["mem_drop"] = {"sites": sites or {"rcvq": sum(causes.values())}, "causes": causes}
    return m


def test_drops_at_a_full_receive_buffer_point_at_the_reader_not_tcp_mem():
    findings, snippet = diagnosis.diagnose(_drops_model({"rcvbuf": 20}), {})
    ids = [f["id"] for f in findings]
    assert "mem_drop.rcvbuf" in ids and "tcp_mem" not in ids
    text = prose(findings)
    assert "reader[42]" in text and "Do not raise tcp_mem" in text and "SO_RCVBUF" in text
    assert snippet == ""      # nothing set: no sysctl can be lowered by it


def test_drops_at_the_hard_limit_are_tcp_mem_refusals_never_lowered():
    m = _drops_model({"hard_limit": 100}, sites={"rcvq": 99, "ofo": 1},
                     peaks={"memory_pages": {"value": 900000, "at": "t"}})
    findings, snippet = diagnosis.diagnose(m, {})
    tcp_mem = next(f for f in findings if f["id"] == "tcp_mem")
    assert "100 received segments dropped at the limit" in " ".join(tcp_mem["evidence"])
    new = snippet_values(snippet)["tcp_mem"]
    assert all(a >= b for a, b in zip(new, TCP_MEM_START))
    assert not {"tcp_rmem", "tcp_wmem"} & set(snippet_values(snippet))


def test_drops_a_memory_cgroup_refused_name_its_limit():
    findings, snippet = diagnosis.diagnose(_drops_model({"memcg": 7}), {})
    f = next(f for f in findings if f["id"] == "mem_drop.memcg")
    assert "memory.max" in " ".join(f["advice"]) and "tcp_mem" not in snippet
