"""BPF programs loaded in the kernel, by id (bpftool), for the tests that
check nothing stays loaded. A program goes after an RCU grace period, not
when its last file descriptor closes."""
import json
import subprocess
import time


def program_ids(names=None) -> set:
    """Ids of the loaded programs (with one of `names`, if given)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout
    return {p["id"] for p in json.loads(out or "[]") if names is None or p.get("name") in names}


def gone(ids: set, within: float = 5.0) -> bool:
    """True once none of `ids` is loaded, waiting up to `within` seconds."""
    deadline = time.monotonic() + within
    while program_ids() & ids and time.monotonic() < deadline:
        time.sleep(0.05)
    return not program_ids() & ids
