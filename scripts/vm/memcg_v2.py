"""Run inside a VM guest: memory-cgroup refusals under cgroup v2 `memory.max`, on a
pure-v2 guest (cgroup2 mounted at /sys/fs/cgroup with +memory, no v1 memory
hierarchy), printed as one JSON object on a line starting with RESULT_PREFIX.

    python3 -m scripts.vm --kernel 6.12 -- python3 -m scripts.vm.memcg_v2

Two scenarios, each a slow reader and a fast sender (scripts/lab/owner_workload.py)
in cgroups the lab makes and removes:

- send: the sender's cgroup has a small memory.max. On v2 the socket charge of a
  send runs in process context with GFP_KERNEL (gfp_memcg_charge(), 6.1 and 6.12,
  include/net/sock.h): try_charge_memcg() reclaims, raises memory.events `max`,
  tries the cgroup's OOM killer (order <= 3: memory.events `oom` +1; the sender
  is -1000, so there is no victim) and fails: __sk_mem_raise_allocated() refuses and
  sock:sock_exceed_buf_limit fires (SK_MEM_SEND always traces). The sender's
  send buffer is locked large, so the kernel does not shrink it after a refusal
  and every refusal below it is traced.
- recv: the reader's cgroup has a small memory.max. A receive-side charge runs in
  softirq, where gfp_memcg_charge() is GFP_ATOMIC: __GFP_HIGH makes
  try_charge_memcg() force the charge above memory.max (its `force:` label) and
  raise memory.events `max` instead of failing. So on v2 the slow reader is not
  refused at all by its memory cgroup: its socket memory goes past memory.max.
  (On 6.1-6.17 a failed receive charge would not be traced either: the
  tracepoint fires on receive only `if (charged)`.)

memory.current and memory.stat are read while the limit holds; the limit is then
lifted ("max"), memory.events.local read, and only then are the processes waited
for: a task of a cgroup above
its memory.max whose page fault cannot be charged retries the fault.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback

from scripts.counts_check import Tracer
from scripts.lab import cgroups as labcg
from scripts.vm.guest_checks import RESULT_PREFIX, classes_of
from tracer.host import cgroups as cg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KiB, MiB = 1 << 10, 1 << 20
PAGE = 4096
START_TIMEOUT_S = 240.0     # python under TCG: the tracer's start takes tens of seconds
SECONDS = 3.0               # the sender's run
CONNS = 2


def mount_v2() -> cg.Mounts:
    """cgroup2 at /sys/fs/cgroup with the memory controller for children, as a
    systemd host on cgroup v2 has it."""
    m = cg.read_mounts()
    if m.v1_memory:
        raise RuntimeError(f"a v1 memory hierarchy is mounted at {m.v1_memory}: not a pure-v2 guest")
    if not m.v2:
        subprocess.run(["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"], check=True)
        m = cg.read_mounts()
    with open(os.path.join(m.v2, "cgroup.subtree_control"), "w") as f:
        f.write("+memory")
    m = cg.read_mounts()
    if m.memory_root != m.v2:
        raise RuntimeError(f"no memory controller on {m.v2}: {m.v2_controllers}")
    return m


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def memory_events(c) -> dict:
    """memory.events.local of a lab cgroup (its own events, not its children's)."""
    out = {}
    for line in _read(os.path.join(c.memory_dir, "memory.events.local")).splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


def memory_figures(c) -> dict:
    stat = dict(line.split() for line in _read(os.path.join(c.memory_dir, "memory.stat")).splitlines())
    return {"current": int(_read(os.path.join(c.memory_dir, "memory.current"))),
            "max": _read(os.path.join(c.memory_dir, "memory.max")).strip(),
            "sock": int(stat.get("sock", 0))}


def log(msg: str) -> None:
    print(f"memcg_v2 {time.monotonic():.1f}: {msg}", file=sys.stderr, flush=True)


def spawn(c, *args) -> subprocess.Popen:
    """A workload moved into `c`, started up and waiting for "go", with the OOM
    killer's hands off it: a cgroup at memory.max then fails charges instead of
    killing the only task in it."""
    p = subprocess.Popen([sys.executable, "-m", "scripts.lab.owner_workload", *map(str, args)],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    c.add(p.pid)
    with open(f"/proc/{p.pid}/oom_score_adj", "w") as f:
        f.write("-1000")
    wait_for_go(p)
    return p


def wait_for_go(p: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the workload sits in read(0, ...) waiting for "go": the interpreter's
    start-up is charged by then, so a limit set next is not hit by it (a page
    fault a cgroup at memory.max cannot charge is retried, not failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _read(f"/proc/{p.pid}/syscall").startswith("0 0x0 "):    # x86_64 read, fd 0
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"workload {p.pid} did not reach its read of stdin in {timeout:.0f} s")


def stop(pid: int, timeout: float = 30.0) -> None:
    """SIGSTOP, and wait until the task is stopped (state T in /proc/PID/stat)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.05)
    raise RuntimeError(f"workload {pid} did not stop in {timeout:.0f} s")


def readline(p: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if ready else ""


def say(p: subprocess.Popen, line: str) -> None:
    p.stdin.write(line + "\n")
    p.stdin.flush()


def limit(c, margin: int) -> int:
    """memory.max = what the cgroup holds now + margin; returns memory.max as the
    kernel took it (whole pages). The cgroup's page cache (the interpreter's
    files) is reclaimed first (memory.reclaim, 5.19+): left in, reclaim at the
    limit would free it and give the sockets megabytes more than `margin`, up
    to the send buffer, where the kernel forces a send's charge instead of
    refusing it (untraced, but one more memory.events oom)."""
    try:
        with open(os.path.join(c.memory_dir, "memory.reclaim"), "w") as f:
            f.write(str(256 * MiB))
    except OSError:
        pass            # EAGAIN: less than asked was reclaimable, which is the point
    c.reclaimed_to = int(_read(os.path.join(c.memory_dir, "memory.current")))
    want = (int(_read(os.path.join(c.memory_dir, "memory.current"))) + margin) // PAGE * PAGE
    with open(os.path.join(c.memory_dir, "memory.max"), "w") as f:
        f.write(str(want))
    return int(_read(os.path.join(c.memory_dir, "memory.max")))


def unlimit(c) -> None:
    with open(os.path.join(c.memory_dir, "memory.max"), "w") as f:
        f.write("max")


def start_record(out: str, port: int) -> subprocess.Popen:
    rec = subprocess.Popen([sys.executable, "-m", "tracer", "record", "-o", out, "--port", str(port),
                            "--family", "mem_exceed"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = rec.stderr.readline()
        if line.startswith("tcpoom: recording"):
            return rec
        if not line and rec.poll() is not None:
            break
    rec.kill()
    raise RuntimeError("tcpoom record did not start: " + rec.stderr.read()[-2000:])


def _event(e: dict) -> dict:
    keys = ("method", "verdict", "mem_class", "memcg", "memcg_limit", "memcg_usage", "cgroup",
            "container", "owner_pid", "owner_fidelity", "pid", "comm", "allocated", "fidelity")
    return {k: e.get(k) for k in keys}


def scenario(limited: str, record: bool = True) -> dict:
    """limited: "send" (the sender's cgroup has the small memory.max) or "recv"
    (the reader's). record: also `tcpoom record` the send side, export and
    report it."""
    out_file = f"/tmp/memcg-{limited}.tcpoom"
    result: dict = {"limited": limited}
    with labcg.LabCgroups() as cgs:
        reader_cg = cgs.make("service", name="reader")
        sender_cg = cgs.make("docker")
        small = sender_cg if limited == "send" else reader_cg
        # send: a small receive buffer stalls the sender's queue in the sender's
        # cgroup; recv: a large one lets the reader's sockets take all it gets
        reader = spawn(reader_cg, "reader", 256 * KiB if limited == "send" else 8 * MiB, CONNS)
        say(reader, "go")
        port = int(reader.stdout.readline())
        sender = spawn(sender_cg, "sender", port, SECONDS, CONNS, 4 * MiB if limited == "send" else 0)
        result["limit_bytes"] = limit(small, 1 * MiB)
        result["cgroup"] = small.rel
        result["current_at_limit"] = small.reclaimed_to
        result["container_id"] = sender_cg.container_id
        result["reader_pid"], result["sender_pid"] = reader.pid, sender.pid
        log(f"{limited}: memory.max {result['limit_bytes']} on {small.rel}; tracers starting")
        rec = start_record(out_file, port) if limited == "send" and record else None
        tracer = Tracer(["--port", str(port), "--family", "mem_exceed"], START_TIMEOUT_S)
        log(f"{limited}: tracers started")
        try:
            before = memory_events(small)
            say(sender, "go")
            # not waiting on the workload while the limit holds: a task of a cgroup
            # at memory.max may sit in a page fault until the limit goes. The
            # sender is stopped while it still sends (a charge under way ends,
            # with its tracepoint, before the stop), the limit lifted, and it
            # goes on: its close (the FIN's forced charge, tcp_send_fin ->
            # sk_forced_mem_schedule) must not meet the limit
            time.sleep(SECONDS - 1.0)
            if limited == "send":
                stop(sender.pid)
            result["figures"] = memory_figures(small)      # while the limit holds
            after = memory_events(small)
            result["memory_events_delta"] = {k: after[k] - before.get(k, 0) for k in after}
            unlimit(small)
            os.kill(sender.pid, signal.SIGCONT)
            result["accepted"] = readline(reader, 120).strip()
            sender.wait(timeout=120)
            log(f"{limited}: workload done: {result['memory_events_delta']} {result['figures']}")
            time.sleep(0.5)
        finally:
            got = tracer.stop(timeout=120)
            if rec is not None:
                rec.send_signal(signal.SIGINT)
                rec.wait(timeout=120)
            unlimit(small)
            say(reader, "done")
            reader.wait(timeout=60)
    result["returncode"] = got["returncode"]
    result["stderr"] = got["stderr"][-3000:]
    result["totals"] = got["totals"]
    result["events"] = [_event(e) for e in got["events"]]
    if rec is not None:
        result["record_returncode"] = rec.returncode
        exp = subprocess.run([sys.executable, "-m", "tracer", "export", out_file], cwd=ROOT,
                             capture_output=True, text=True)
        result["recorded_events"] = [_event(json.loads(ln)) for ln in exp.stdout.splitlines() if ln.strip()]
        rep = subprocess.run([sys.executable, "-m", "tracer", "report", out_file, "--format", "json"],
                             cwd=ROOT, capture_output=True, text=True)
        result["report_returncode"] = rep.returncode
        try:
            host = json.loads(rep.stdout)["hosts"][0]
            result["diagnosis"] = host["diagnosis"]
            result["mem_classes"] = host.get("mem_exceed")
        except (ValueError, KeyError, IndexError):
            result["report_error"] = (rep.stderr or rep.stdout)[-3000:]
    return result


def run_row(s: dict) -> dict:
    """One send run, as scripts/vm_exact.py keeps it: exact when the tracer
    exited 0, lost nothing, printed every refusal it counted, counted some, and
    classified each as `memcg` against the cgroup's memory.max."""
    row = next((x for x in (s.get("totals") or {}).get("families", [])
                if x["family"] == "mem_exceed"), {})
    events = s["events"]
    right = all(e["mem_class"] == "memcg" and e["memcg_limit"] == s["limit_bytes"] // PAGE
                and e["memcg"] == s["cgroup"] for e in events)
    seen, lost = row.get("seen"), row.get("lost")
    return {"seen": seen, "printed": len(events), "lost": lost, "returncode": s["returncode"],
            "classes": classes_of(events), "missed": row.get("missed"),
            "exact": (s["returncode"] == 0 and lost == 0 and seen == len(events) and bool(seen) and right),
            "seconds": s.get("seconds")}


def main(argv=None) -> int:
    import argparse
    from tracer.kernel import facts as kernel_facts, plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1,
                    help="also run the send scenario this many times more, without the "
                         "recording, each kept as a row under \"runs\" (scripts/vm_exact.py)")
    args = ap.parse_args(argv)
    out: dict = {"scenarios": {}, "errors": {}}
    t0 = time.monotonic()
    try:
        m = mount_v2()
        out["mounts"] = {"mode": m.mode, "v2": m.v2, "controllers": m.v2_controllers}
        f = kernel_facts.gather()
        out["release"] = f.release
        out["plan_mem_exceed"] = plan.build(f).to_json()["families"]["mem_exceed"]
        out["memcg_v1"] = f.memcg_v1
    except Exception:
        out["errors"]["setup"] = traceback.format_exc()[-3000:]
    if not out["errors"]:
        for name in ("send", "recv"):
            started = time.monotonic()
            try:
                out["scenarios"][name] = scenario(name)
                out["scenarios"][name]["seconds"] = round(time.monotonic() - started, 1)
            except Exception:
                out["errors"][name] = traceback.format_exc()[-3000:]
        for i in range(args.runs if args.runs > 1 else 0):
            started = time.monotonic()
            try:
                s = scenario("send", record=False)
                s["seconds"] = round(time.monotonic() - started, 1)
                out.setdefault("runs", []).append(run_row(s))
            except Exception:
                out["errors"][f"send:{i}"] = traceback.format_exc()[-3000:]
        out["leftover"] = labcg.leftover()
    out["seconds"] = round(time.monotonic() - t0, 1)
    sys.stdout.write(RESULT_PREFIX + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
