"""The rules both VM suites (CO-RE and bcc) apply to what a guest reported."""


def check_kprobe_counts(s: dict) -> dict:
    """A scenario's result under kprobes: every event printed, none lost, the
    kprobe method used, and the count equal to the kernel's but for nesting
    misses. A kprobe that fires while one of tcpoom's handlers runs on that
    CPU is missed (the plan's blind spot): rare under TCG (one suite run saw
    2 of 95), at most 5%, each one reported. Returns the family's totals row."""
    assert s["lab_delta"] > 0 and s["kernel_delta"] == s["lab_delta"]
    assert s["printed"] == s["seen"] and s["lost"] == 0
    assert {e["method"] for e in s["events"]} == {"kprobe"}
    row = next(x for x in s["totals"]["families"] if x["family"] == s["family"])
    assert row["method"].startswith("kprobe ")
    missed = s["kernel_delta"] - s["seen"]
    assert 0 <= missed <= max(3, s["kernel_delta"] // 20), s["totals"]
    if missed:
        assert row["not_seen_individually"] == missed and "kprobes do not nest" in row["blind_spot"]
    return row


def check_close_path_events(events: list) -> None:
    """orphans_close: every event on the close path with shift 0 and exact
    orphan figures, above tcp_max_orphans=0, with the memory figures."""
    assert events
    for e in events:
        assert e["caller"] == "close" and e["shift"] == 0
        assert e["fidelity"]["shift"] == e["fidelity"]["orphans"] == "exact"
        # tcp_max_orphans=0: the lingering seed orphan alone is one too many
        assert e["max_orphans"] == 0 and e["orphans"] >= 1
        assert "too_many_orphans" in e["verdict"]
        assert e["memory_allocated"] is not None and e["tcp_mem"] is not None
