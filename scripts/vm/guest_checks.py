"""Run inside a VM guest: the kernel facts, the probe plan, and lab scenarios
under `tcpoom trace` (scripts/counts_check.run_once), printed as one JSON
object on a line starting with RESULT_PREFIX.

    python3 -m scripts.vm --kernel 6.12 -- python3 -m scripts.vm.guest_checks \
        best:tw_overflow,orphans_close,orphans_timer kprobe:orphans_close:100
    python3 -m scripts.vm --kernel 6.1 --headers -- python3 -m scripts.vm.guest_checks \
        bcc:tw_overflow,orphans_close,orphans_timer:100

Two adaptations to the guest, both recorded in the result under "adaptations":
  - a per-netns sysctl that a scenario sets but this kernel does not have
    (net.ipv4.tcp_rto_max_ms is 6.18+) is skipped instead of failing the
    scenario;
  - the tracer gets longer to start (Python under TCG is 20-40 times slower;
    the bcc engine, which runs clang at start, longer still).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

RESULT_PREFIX = "TCPOOM-GUEST-RESULT "
BCC_START_TIMEOUT_S = 400.0
#: seconds each `tcpoom trace` took to start (facts, plan, load or compile, attach)
TRACER_STARTS: list = []
EVENT_KEYS = ("method", "caller", "shift", "shift_is_lower_bound", "orphans", "max_orphans",
              "memory_allocated", "tcp_mem", "verdict", "reset_sent", "reason", "state",
              "tw_count", "max_tw_buckets", "fidelity", "mem_class")


def _adapt(adaptations: list) -> None:
    from scripts import counts_check
    from scripts.lab import context

    original = context.Context.set_sysctl

    def set_sysctl(self, name, value):
        path = "/proc/sys/" + name.replace(".", "/")
        if not os.path.exists(path):
            adaptations.append(f"skipped {name}={value}: not on this kernel")
            return
        original(self, name, value)

    context.Context.set_sysctl = set_sysctl
    init = counts_check.Tracer.__init__
    defaults = list(init.__defaults__ or ())
    if defaults and defaults[-1] < 120:
        defaults[-1] = 120.0
        init.__defaults__ = tuple(defaults)
        adaptations.append("tracer start timeout 120 s")

    def timed_init(self, *args, **kwargs):
        # the bcc engine compiles at start: clang under TCG takes minutes
        if os.environ.get("TCPOOM_ENGINE") == "bcc":
            kwargs.setdefault("timeout", BCC_START_TIMEOUT_S)
        started = time.monotonic()
        init(self, *args, **kwargs)
        TRACER_STARTS.append(round(time.monotonic() - started, 1))

    counts_check.Tracer.__init__ = timed_init


def _scenario(name: str, count) -> dict:
    from scripts.counts_check import run_once

    started = time.monotonic()
    TRACER_STARTS.clear()
    r = run_once(name, count)
    events = [{k: e[k] for k in EVENT_KEYS if k in e} for e in r["events"]]
    return {
        "scenario": name, "family": r["family"], "counter": r["counter"],
        "lab_delta": r["lab_delta"], "seen": r["seen"], "kernel_delta": r["kernel_delta"],
        "printed": r["printed"], "lost": r["lost"], "returncode": r["returncode"],
        "kmsg_lines": r["kmsg_lines"], "totals": r["totals"], "events": events,
        "pressure_verdicts": r.get("pressure_verdicts", []),
        "stderr": r["stderr"][-3000:], "seconds": round(time.monotonic() - started, 1),
        "tracer_start_seconds": TRACER_STARTS[0] if TRACER_STARTS else None,
    }


def _simulated_inlining(name: str, count) -> dict:
    """A scenario with the close-path companions of the plan's oom_check method
    loaded but not its tcp_check_oom probe: what a kernel whose __tcp_close has
    tcp_check_oom inlined shows. Loaded in this process (not `tcpoom trace`),
    counted in the kernel against TCPAbortOnMemory."""
    from scripts.lab import Lab
    from tracer.model import events as ev
    from tracer.kernel import facts as kernel_facts, loader, plan as plan_mod

    facts = kernel_facts.gather()
    p = plan_mod.build(facts)
    oom = p.families["oom_check"]
    oom.programs = [x for x in oom.programs if "check_oom" not in x]
    started = time.monotonic()
    with Lab(allow_global_sysctls=True) as lab:
        session = loader.Session(p, loader.Filters(netns=lab.netns_inode, families=["oom_check"]))
        session.start()
        try:
            result = lab.run(name, count)
            time.sleep(0.3)
            counters = session.counters()
            records = session.ringbuf.read()
        finally:
            session.close()
    events = [ev.Event.decode(bytes(r)) for r in records]
    return {
        "scenario": name, "method": oom.method, "programs": oom.programs,
        "lab_delta": result.deltas.get("TCPAbortOnMemory"),
        "seen": counters[ev.CNT_OOM_CHECK], "close": counters[ev.CNT_OOM_CLOSE],
        "timer": counters[ev.CNT_OOM_TIMER], "lost": counters[ev.CNT_LOST_BASE + ev.OOM_CHECK],
        "events": [{"caller": e.caller_name, "shift": e.shift, "method": e.method_name,
                    "verdict": e.verdict, "orphans": e.orphans, "max_orphans": e.max_orphans,
                    "state": e.state_name, "fidelity_shift": e.fidelity("shift")} for e in events],
        "seconds": round(time.monotonic() - started, 1),
    }


def classes_of(events: list) -> dict:
    """How a run's events were classified: refusals by mem_class, drops by
    reason, the others by verdict (the guest's 20-of-20 check of the classes)."""
    counts: dict = {}
    for e in events:
        key = e.get("mem_class") or e.get("reason") or e.get("verdict")
        counts[str(key)] = counts.get(str(key), 0) + 1
    return counts


def _tier_arg(text: str):
    """"kprobe:tw_overflow,orphans_close[:COUNT]" -> ("kprobe", [...], COUNT or None)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in TIERS:
        raise argparse.ArgumentTypeError(f"{text!r}: TIER:SCENARIO[,SCENARIO...][:COUNT], "
                                         f"TIER one of {', '.join(TIERS)}")
    count = int(parts[2]) if len(parts) == 3 and parts[2] else None
    return parts[0], [x for x in parts[1].split(",") if x], count


#: what --runs keeps of each run
RUN_KEYS = ("seen", "kernel_delta", "lab_delta", "printed", "lost", "returncode", "seconds")
#: and of the family's totals row: the kernel's own miss counts (None: not counted there),
#: and the method the run used (a refused program demotes its family: not always the plan's)
ROW_KEYS = ("missed", "missed_unmeasured", "explained_by_misses", "method")

#: tier -> TCPOOM_DENY_METHODS that makes the plan choose it where the kernel has it;
#: the "-inlined" tiers load that tier without its tcp_check_oom probe (see
#: _simulated_inlining), for the close-path scenarios
TIERS = {"best": "", "kprobe": "fentry", "tracepoint": "fentry,kprobe",
         "best-inlined": "", "kprobe-inlined": "fentry", "bcc": ""}
#: tier -> TCPOOM_ENGINE of its `tcpoom trace` runs ("bcc": needs the kernel's
#: headers, scripts.vm --headers)
ENGINES = {"bcc": "bcc"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1,
                    help="run each scenario this many times; every run's counts are kept under "
                         "\"runs\" (scripts/vm_exact.py: the 20-of-20 check in a guest)")
    ap.add_argument("tiers", nargs="*", type=_tier_arg, metavar="TIER:SCENARIOS[:COUNT]",
                    help=f"scenarios to run under the tracer with the plan's best methods "
                         f"(best:...) or with better ones ruled out ({', '.join(TIERS)})")
    args = ap.parse_args(argv)
    from tracer.kernel import facts as kernel_facts, plan

    out: dict = {"adaptations": [], "tiers": {}, "errors": {}}
    t0 = time.monotonic()
    facts = kernel_facts.gather()
    out["facts"] = facts.to_json()
    out["plan"] = plan.build(facts).to_json()
    out["facts_seconds"] = round(time.monotonic() - t0, 1)
    _adapt(out["adaptations"])
    for tier, scenarios, count in args.tiers:
        os.environ[kernel_facts.DENY_ENV] = TIERS[tier]
        engine = ENGINES.get(tier, "auto")
        os.environ["TCPOOM_ENGINE"] = engine
        t = out["tiers"].setdefault(tier, {"scenarios": {}})
        try:
            f = kernel_facts.gather()
            t["plan"] = plan.build(f, engine=plan.choose_engine(f, engine)).to_json()
        except Exception:
            out["errors"][f"{tier}:plan"] = traceback.format_exc()[-3000:]
            continue
        for name in scenarios:
            run = _simulated_inlining if tier.endswith("-inlined") else _scenario
            for i in range(args.runs):
                try:
                    r = run(name, count)
                except Exception:
                    out["errors"][f"{tier}:{name}:{i}"] = traceback.format_exc()[-3000:]
                    continue
                if i == 0:
                    t["scenarios"][name] = r
                if args.runs > 1:
                    row = next((x for x in (r.get("totals") or {}).get("families", [])
                                if x["family"] == r.get("family")), {})
                    t.setdefault("runs", {}).setdefault(name, []).append(
                        {**{k: r.get(k) for k in RUN_KEYS}, **{k: row.get(k) for k in ROW_KEYS},
                         "classes": classes_of(r.get("events", []))})
    os.environ.pop(kernel_facts.DENY_ENV, None)
    os.environ.pop("TCPOOM_ENGINE", None)
    out["seconds"] = round(time.monotonic() - t0, 1)
    sys.stdout.write(RESULT_PREFIX + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 1 if out["errors"] else 0


def parse(output: str) -> dict:
    """The result object from a guest's output."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ValueError("no result line in the guest's output:\n" + output[-3000:])


if __name__ == "__main__":
    sys.exit(main())
