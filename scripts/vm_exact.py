"""The "N runs out of N exact" check of the lab scenarios inside a stock Debian
kernel under qemu (scripts/vm), per probe tier, written as JSON for the docs.

    python3 -m scripts.vm_exact --kernel 6.1 --runs 10 \
        best:tw_linger0,orphans_timer kprobe:tw_overflow,orphans_close:100 \
        --json docs/exactness/guest-6.1.json

A run is exact as on this machine (scripts/counts_check.exact); a run short
only by what the kernel says its programs missed is shown apart. Exit status 1
when a run was not exact, 125 when the guest
could not run. Hours under TCG for many scenarios: pick them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

from scripts.counts_check import exact
from scripts.vm import VMError, run_in_vm
from scripts.vm.guest_checks import parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def explained(run: dict) -> bool:
    """Short only by what the kernel says its programs missed."""
    return (not exact(run, "x") and run["returncode"] == 0 and run["lost"] == 0
            and run["kernel_delta"] == run["lab_delta"] and bool(run.get("explained_by_misses")))


def summarise(result: dict) -> dict:
    """tier -> scenario -> {exact: k, runs: n, seen/kernel: [...]}"""
    from scripts.counts_check import SCENARIO_FAMILY

    out = {}
    for tier, t in result["tiers"].items():
        for name, runs in t.get("runs", {}).items():
            counter = SCENARIO_FAMILY[name][1]
            out.setdefault(tier, {})[name] = {
                "exact": sum(exact(r, counter) for r in runs), "runs": len(runs),
                "short_but_explained": sum(explained(r) for r in runs) if counter else 0,
                "missed": [r.get("missed") for r in runs],
                "method": (t.get("plan", {}).get("families", {})
                           .get(SCENARIO_FAMILY[name][0], {}).get("method")),
                # which of a method's programs (tp_btf: state_cast_btf where
                # the kernel has bpf_rdonly_cast, else set_state_btf)
                "programs": (t.get("plan", {}).get("families", {})
                             .get(SCENARIO_FAMILY[name][0], {}).get("programs")),
                # what the runs used: a program the verifier refused demotes its
                # family to the next method, and the plan above would not say so
                "used": sorted({r["method"] for r in runs if r.get("method")}),
                "seen/kernel": [f"{r['seen']}/{r['kernel_delta'] if counter else '-'}" for r in runs],
                "classes": [r.get("classes") for r in runs],
            }
    return out


def _memcg_v2_summary(result: dict) -> dict:
    """scripts/vm/memcg_v2.py --runs: the send scenario's refusals at memory.max."""
    runs = result.get("runs", [])
    return {"memcg_v2": {"memcg_v2_send": {
        "exact": sum(r["exact"] for r in runs), "runs": len(runs), "short_but_explained": 0,
        "missed": [r.get("missed") for r in runs], "method": (result.get("plan_mem_exceed") or {}).get("method"),
        "seen/kernel": [f"{r['seen']}/-" for r in runs], "classes": [r["classes"] for r in runs]}}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds for the whole guest")
    ap.add_argument("--json", help="write the summary and every run's counts here")
    ap.add_argument("--memcg-v2", action="store_true",
                    help="instead of lab scenarios, the memory.max refusals of scripts/vm/memcg_v2.py "
                         "(a pure cgroup v2 guest), each run classified memcg against the cgroup")
    ap.add_argument("tiers", nargs="*", metavar="TIER:SCENARIOS[:COUNT]")
    args = ap.parse_args(argv)
    if not args.tiers and not args.memcg_v2:
        ap.error("name TIER:SCENARIOS, or --memcg-v2")
    command = (["-m", "scripts.vm.memcg_v2", "--runs", str(args.runs)] if args.memcg_v2 else
               ["-m", "scripts.vm.guest_checks", "--runs", str(args.runs), *args.tiers])
    try:
        vm = run_in_vm([sys.executable, *command], args.kernel, cwd=ROOT, timeout=args.timeout)
        result = parse(vm.output)
    except (VMError, ValueError) as e:
        print(f"vm_exact: {str(e).splitlines()[0]}", file=sys.stderr)
        return 125
    summary = _memcg_v2_summary(result) if args.memcg_v2 else summarise(result)
    for tier, scenarios in summary.items():
        for name, s in scenarios.items():
            used = ", ".join(s["used"]) or s["method"] or "?"
            print(f"{vm.release:<22} {tier:<11} {name:<22} {used:<8} "
                  f"{s['exact']}/{s['runs']} exact, {s['short_but_explained']} short by what the kernel "
                  f"says it missed   seen/kernel: {' '.join(s['seen/kernel'])}   missed: {s['missed']}")
    for where, err in result["errors"].items():
        print(f"{where}: {err.strip().splitlines()[-1]}", file=sys.stderr)
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        runs = ({"memcg_v2": {"memcg_v2_send": result.get("runs", [])}} if args.memcg_v2 else
                {tier: t.get("runs", {}) for tier, t in result["tiers"].items()})
        doc = {"machine": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "guest_kernel": vm.release, "host_kernel": os.uname().release,
                           "commit": commit, "cpus_in_guest": 2, "qemu": "TCG"},
               "command": " ".join(["python3 -m scripts.vm_exact", *(argv or sys.argv[1:])]),
               "summary": summary, "runs": runs,
               "errors": result["errors"], "adaptations": result.get("adaptations", [])}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    bad = any(s["exact"] != s["runs"] for sc in summary.values() for s in sc.values())
    return 1 if bad or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
