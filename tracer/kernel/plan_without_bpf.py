"""The probe plan `tcpoom doctor` shows: built from the kernel facts without
loading anything (no fentry test load), and saying what it could not know
(without privileges, without the per-boot cache of an attaching command)."""
from __future__ import annotations

from typing import List, Tuple

from tracer.model.families import FAMILY_ORDER
from . import facts as kernel_facts
from . import plan as plan_mod

#: (what, why): a thing the plan could not find out
Miss = Tuple[str, str]


def plan_without_bpf(privileges: dict) -> Tuple[dict, List[Miss]]:
    """The plan `tcpoom trace` would use here, how much of it is known for sure,
    and what could not be found out. `privileges` as host.privileges.privileges()."""
    why: List[str] = []
    misses: List[Miss] = []
    try:
        facts = kernel_facts.gather(test_load=False)     # doctor loads no BPF
    except Exception as exc:  # libbpf missing, BTF unreadable: the plan is optional here
        misses.append(("probe plan", f"kernel facts: {type(exc).__name__}: {exc}"))
        return {"available": False, "partial": True, "partial_why": [str(exc)], "kernel": "",
                "engine": "", "notes": [], "families": {}}, misses
    if not privileges["bpf"]:
        # gather() tries its test load when euid is 0; without the capabilities that
        # EPERM is ours, not the kernel's: say "not tried" rather than "refused".
        facts.root = False
        facts.fentry_errno = None
        why.append("no CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN: fentry was not tried, so "
                   "whether this kernel accepts it is unknown (run as root to find out)")
        misses.append(("fentry test load (probe plan)",
                       "needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN"))
    elif facts.fentry_errno is None and facts.btf and any(facts.btf_functions.values()):
        # the answer is known only where an attaching command (or `probes`)
        # tested fentry since boot and cached it (/run/tcpoom)
        why.append("fentry not tested: doctor loads no BPF program; `tcpoom probes` tests it "
                   "(one program loaded, never attached) and keeps the answer until reboot")
        misses.append(("fentry test load (probe plan)",
                       "doctor loads no BPF: run `tcpoom probes` once, then doctor shows it"))
    if not facts.kallsyms_read and facts.kprobes:
        why.append("/proc/kallsyms not read (needs root): kprobe targets unknown")
        misses.append(("/proc/kallsyms functions (probe plan)", "read only as root"))
    if not privileges["kallsyms_addresses"]:
        why.append("kallsyms addresses hidden (no CAP_SYSLOG, or kptr_restrict): "
                   "tcp_orphan_cache and sysctl_tcp_max_orphans cannot be located, so the "
                   "orphan figures are planned as sampled")
        misses.append(("/proc/kallsyms addresses (probe plan)",
                       "all zeros without CAP_SYSLOG (or with kernel.kptr_restrict)"))
    p = plan_mod.build(facts)
    fams = {}
    for name in FAMILY_ORDER:
        fp = p.families[name]
        fams[name] = {"method": fp.method, "target": fp.target,
                      "fields": {k: v[0] for k, v in fp.fields.items()},
                      "sampled": [k for k, v in fp.fields.items() if v[0] == plan_mod.SAMPLED],
                      "blind_spot": fp.blind_spot}
    return {"available": True, "partial": bool(why), "partial_why": why, "kernel": p.kernel,
            "engine": p.engine, "notes": list(p.notes), "families": fams}, misses
