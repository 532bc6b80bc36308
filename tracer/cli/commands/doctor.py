"""Diagnose TCP socket memory now, without BPF: read /proc/net/sockstat(6),
/proc/net/netstat (twice, --interval apart), /proc/net/protocols and the
sysctls, say which limit is reached or near, why, and what to change (with an
/etc/sysctl.d/ snippet), and show what `tcpoom trace` could attach on this
kernel. Changes nothing. Works without root for what /proc allows, and says
what it could not read.

\b
Exit codes (for scripts and monitoring, as a Nagios/Icinga plugin):
  0  healthy (no finding worse than info)
  1  warning: a limit is reached, or reached for some sockets
     (TIME_WAIT table full, memory pressure, orphans above
     tcp_max_orphans/4 or /2, received data dropped)
  2  critical: the kernel refuses memory or kills connections now
     (TCP memory above tcp_mem[2], orphans above tcp_max_orphans,
     TCPAbortOnMemory moved during the interval)
  3  unknown: bad usage (one line on stderr, nothing on stdout), or
     the figures could not be read at all; never 1 or 2, so a typo in
     a monitoring check never reads as a warning or critical
  130 interrupted

\b
--json keys (stable; a figure that could not be read is null):
  schema            1
  verdict           "ok" | "warning" | "critical"
  exit_code         0 | 1 | 2
  host              hostname, kernel, page_size, mem_total_bytes, euid,
                    privileges {bpf, sys_admin, kallsyms_addresses}
  netns             requested, inode, own
  tcp               inuse, inuse6, orphan, tw, alloc, mem_pages,
                    mem_bytes, mem_margin_pages (6.0+: ± pages in per-CPU
                    reserves, outside the global figure), memory_pressure
  limits            tcp_mem_pages [low, pressure, high], tcp_mem_bytes,
                    tcp_max_orphans, orphan_kill_above {shift0, shift1,
                    shift2}, tcp_max_tw_buckets, tcp_rmem, tcp_wmem,
                    tcp_tw_reuse
  worst_case        sockets, buffer_bytes, tcp_mem_high_bytes,
                    orphan_bytes, mem_total_bytes
  counters          interval_s, TcpExt {NAME: {total, delta}}
  findings          [{id, severity, limit, title, evidence [], advice [],
                    why}], worst first
  sysctl_snippet    an /etc/sysctl.d/ file, "" if no change is advised
  plan              available, partial, partial_why [], kernel, engine,
                    notes [], families {NAME: {method, target,
                    fields {FIELD: fidelity}, sampled [], blind_spot}}
  unavailable       [{what, why}]: figures that could not be read
  not_checked       [rule: what it needed]: rules skipped for that

\b
Examples:
  tcpoom doctor
  tcpoom doctor --json | jq .verdict
  tcpoom doctor --netns lab --interval 5"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Callable, Dict, List, Optional, Tuple

import click

from tracer.analysis import doctor as rules
from tracer.kernel import facts as kernel_facts
from tracer.host import netns, pcpu_margin, procfs
from tracer.kernel import plan as plan_mod
from tracer.errors import TcpoomError, UsageError
from tracer.model.families import FAMILY_ORDER

EXIT_UNKNOWN = 3
CAP_SYS_ADMIN, CAP_SYSLOG, CAP_PERFMON, CAP_BPF = 21, 34, 38, 39
NETNS_TIMEOUT_S = 5.0


class DoctorUnknown(TcpoomError):
    """Nothing could be diagnosed: the Nagios "UNKNOWN" state, never 1 or 2."""

    exit_code = EXIT_UNKNOWN


class DoctorUsage(UsageError):
    """A usage error of doctor's: UNKNOWN too, so 1 and 2 always mean a verdict."""

    exit_code = EXIT_UNKNOWN


class DoctorCommand(click.Command):
    """Usage errors exit 3 (UNKNOWN), so 1 and 2 always mean a verdict."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = EXIT_UNKNOWN
            raise


class Verdict(click.ClickException):
    """The diagnosis is done; its severity is the process's exit code, and that is all.

    Not ctx.exit(code): in the non-standalone mode cli.main() runs click in, click
    catches that Exit and *returns* the code from cli.main(args), which cli.main()
    does not pass on, so the process would exit 0. A ClickException is re-raised, and
    cli.main() returns its exit_code after show(), which here prints nothing: the
    verdict was already printed on stdout.
    """

    def __init__(self, code: int) -> None:
        super().__init__(f"verdict exit code {code}")
        self.exit_code = code

    def show(self, file=None) -> None:
        pass




# --------------------------------------------------------------------------- reading

class Reader:
    """Reads figures, never fails on one: each miss is noted in `unavailable`."""

    def __init__(self) -> None:
        self.unavailable: List[dict] = []

    def get(self, what: str, fn: Callable, *args):
        try:
            return fn(*args)
        except netns.NetnsError as exc:
            self.miss(what, str(exc))
        except PermissionError as exc:
            self.miss(what, f"permission denied ({exc.filename or exc.strerror}): needs root")
        except FileNotFoundError as exc:
            self.miss(what, f"{exc.filename or 'file'} does not exist on this kernel")
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            self.miss(what, f"{type(exc).__name__}: {exc}")
        return None

    def miss(self, what: str, why: str) -> None:
        self.unavailable.append({"what": what, "why": why})


def _read_sockstat6(ns) -> Dict[str, Dict[str, int]]:
    def read():
        with open("/proc/thread-self/net/sockstat6") as fh:
            return procfs.parse_sockstat(fh.read())
    return read() if ns is None else netns.run_in_netns(ns, read, timeout=NETNS_TIMEOUT_S)


def _tcp_ext(ns) -> Dict[str, int]:
    return procfs.read_netstat(ns)["TcpExt"]


def _triple(text: str) -> Tuple[int, int, int]:
    low, mid, high = (int(w) for w in text.split())
    return low, mid, high


def _mem_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in /proc/meminfo")


def _privileges() -> dict:
    caps = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        pass

    def have(bit: int) -> bool:
        return bool(caps >> bit & 1)

    try:
        # Without CAP_SYSLOG (or with kptr_restrict) every address reads as zeros.
        with open("/proc/kallsyms") as fh:
            addresses = int(fh.readline().split()[0], 16) != 0
    except (OSError, ValueError, IndexError):
        addresses = False
    return {"sys_admin": have(CAP_SYS_ADMIN),
            # BPF programs of the tracing kind need CAP_BPF and CAP_PERFMON (5.8+), or
            # CAP_SYS_ADMIN on any kernel.
            "bpf": have(CAP_SYS_ADMIN) or (have(CAP_BPF) and have(CAP_PERFMON)),
            "kallsyms_addresses": addresses}


_BLOCKED = object()   # a namespace this process may not enter


def _can_enter(ns, label: str, reader: Reader) -> bool:
    try:
        netns.run_in_netns(ns, lambda: None, timeout=NETNS_TIMEOUT_S)
        return True
    except PermissionError:
        reader.miss(f"namespace {label}",
                    "entering another network namespace needs CAP_SYS_ADMIN (root): its "
                    "sockstat (inuse, tw), sockstat6, TcpExt counters and per-namespace "
                    "sysctls (tcp_max_tw_buckets, tcp_rmem, tcp_wmem) are not available; the "
                    "host-wide figures (orphan, alloc, mem, tcp_mem, tcp_max_orphans) are "
                    "read from the caller's namespace")
    except (OSError, TimeoutError, netns.NetnsError) as exc:
        reader.miss(f"namespace {label}", f"could not enter it: {exc}")
    return False


def read_figures(ns, own: bool, label: str, interval: float,
                 reader: Reader) -> rules.Figures:
    fig = rules.Figures(page_size=os.sysconf("SC_PAGE_SIZE"), interval_s=interval,
                        own_netns=own, netns_label=label)
    where = "" if own else f" of namespace {label}"
    if not own and not _can_enter(ns, label, reader):
        # One line for all of them, rather than one refusal per file.
        ns = _BLOCKED
    # The figures judged are read first, then the counters' interval: a condition that
    # lasts a moment (a lowered limit) is read while it lasts.
    tcp = None
    if ns is not _BLOCKED:
        tcp = reader.get(f"/proc/net/sockstat{where}", lambda: procfs.read_sockstat(ns)["TCP"])
    if tcp is None and not own:
        # orphan, alloc and mem are host-wide: any namespace's sockstat shows them.
        host = reader.get("/proc/net/sockstat", lambda: procfs.read_sockstat()["TCP"])
        if host is not None:
            tcp = {k: host.get(k) for k in ("orphan", "alloc", "mem")}
    tcp = tcp or {}
    fig.inuse, fig.orphans, fig.tw = tcp.get("inuse"), tcp.get("orphan"), tcp.get("tw")
    fig.alloc, fig.mem_pages = tcp.get("alloc"), tcp.get("mem")
    fig.mem_margin = pcpu_margin.margin(page_size=fig.page_size)
    if ns is not _BLOCKED:
        v6 = reader.get(f"/proc/net/sockstat6{where}", _read_sockstat6, ns)
        fig.inuse6 = (v6 or {}).get("TCP6", {}).get("inuse")
    limits = None
    try:
        if ns is not _BLOCKED:
            limits = procfs.tcp_limits(ns)
    except (OSError, ValueError, netns.NetnsError, TimeoutError):
        pass  # read one by one below, each miss with its own reason
    if ns is _BLOCKED:
        host = lambda name: reader.get(name, procfs.read_host_sysctl, name)  # noqa: E731
        text = host("net.ipv4.tcp_mem")
        fig.tcp_mem = _triple(text) if text else None
        text = host("net.ipv4.tcp_max_orphans")
        fig.tcp_max_orphans = int(text) if text else None
    elif limits is not None:
        fig.tcp_mem, fig.tcp_max_orphans = limits.tcp_mem, limits.tcp_max_orphans
        fig.tcp_max_tw_buckets = limits.tcp_max_tw_buckets
        fig.tcp_rmem, fig.tcp_wmem = limits.tcp_rmem, limits.tcp_wmem
    else:
        host = lambda name: reader.get(name, procfs.read_host_sysctl, name)  # noqa: E731
        local = lambda name: reader.get(name + where, procfs.read_sysctl, name, ns)  # noqa: E731
        text = host("net.ipv4.tcp_mem")
        fig.tcp_mem = _triple(text) if text else None
        text = host("net.ipv4.tcp_max_orphans")
        fig.tcp_max_orphans = int(text) if text else None
        text = local("net.ipv4.tcp_max_tw_buckets")
        fig.tcp_max_tw_buckets = int(text) if text else None
        text = local("net.ipv4.tcp_rmem")
        fig.tcp_rmem = _triple(text) if text else None
        text = local("net.ipv4.tcp_wmem")
        fig.tcp_wmem = _triple(text) if text else None
    if ns is not _BLOCKED:
        text = reader.get("net.ipv4.tcp_tw_reuse" + where, procfs.read_sysctl,
                          "net.ipv4.tcp_tw_reuse", ns)
        fig.tcp_tw_reuse = int(text) if text else None
    # The pressure flag is host-wide: read it from the caller's own namespace.
    fig.pressure = reader.get("/proc/net/protocols", procfs.tcp_memory_pressure)
    fig.mem_total = reader.get("/proc/meminfo", _mem_total)
    if ns is not _BLOCKED:
        fig.counters_before = reader.get(f"/proc/net/netstat{where}", _tcp_ext, ns)
    if fig.counters_before is not None:
        time.sleep(interval)
        fig.counters_after = reader.get(f"/proc/net/netstat{where} (second read)", _tcp_ext, ns)
    return fig


def probe_plan(privileges: dict, reader: Reader) -> dict:
    """The plan `tcpoom trace` would use here, and how much of it is known for sure."""
    why: List[str] = []
    try:
        facts = kernel_facts.gather(test_load=False)     # doctor loads no BPF
    except Exception as exc:  # libbpf missing, BTF unreadable: the plan is optional here
        reader.miss("probe plan", f"kernel facts: {type(exc).__name__}: {exc}")
        return {"available": False, "partial": True, "partial_why": [str(exc)], "kernel": "",
                "engine": "", "notes": [], "families": {}}
    if not privileges["bpf"]:
        # gather() tries its test load when euid is 0; without the capabilities that
        # EPERM is ours, not the kernel's: say "not tried" rather than "refused".
        facts.root = False
        facts.fentry_errno = None
        why.append("no CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN: fentry was not tried, so "
                   "whether this kernel accepts it is unknown (run as root to find out)")
        reader.miss("fentry test load (probe plan)",
                    "needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN")
    elif facts.fentry_errno is None and facts.btf and any(facts.btf_functions.values()):
        # the answer is known only where an attaching command (or `probes`)
        # tested fentry since boot and cached it (/run/tcpoom)
        why.append("fentry not tested: doctor loads no BPF program; `tcpoom probes` tests it "
                   "(one program loaded, never attached) and keeps the answer until reboot")
        reader.miss("fentry test load (probe plan)",
                    "doctor loads no BPF: run `tcpoom probes` once, then doctor shows it")
    if not facts.kallsyms_read and facts.kprobes:
        why.append("/proc/kallsyms not read (needs root): kprobe targets unknown")
        reader.miss("/proc/kallsyms functions (probe plan)", "read only as root")
    if not privileges["kallsyms_addresses"]:
        why.append("kallsyms addresses hidden (no CAP_SYSLOG, or kptr_restrict): "
                   "tcp_orphan_cache and sysctl_tcp_max_orphans cannot be located, so the "
                   "orphan figures are planned as sampled")
        reader.miss("/proc/kallsyms addresses (probe plan)",
                    "all zeros without CAP_SYSLOG (or with kernel.kptr_restrict)")
    p = plan_mod.build(facts)
    fams = {}
    for name in FAMILY_ORDER:
        fp = p.families[name]
        fams[name] = {"method": fp.method, "target": fp.target,
                      "fields": {k: v[0] for k, v in fp.fields.items()},
                      "sampled": [k for k, v in fp.fields.items() if v[0] == plan_mod.SAMPLED],
                      "blind_spot": fp.blind_spot}
    return {"available": True, "partial": bool(why), "partial_why": why, "kernel": p.kernel,
            "engine": p.engine, "notes": list(p.notes), "families": fams}


def _resolve_netns(ref: Optional[str]) -> Tuple[object, bool, str, Optional[int]]:
    """(reference for procfs, own namespace?, label, inode or None)."""
    own_inode = netns.netns_inode()
    if ref is None:
        return None, True, "own", own_inode
    target = int(ref) if ref.isdigit() else ref
    try:
        path = netns.resolve(target)
        inode = netns.netns_inode(path)
    except netns.NetnsError as exc:
        raise DoctorUsage(str(exc)) from None       # as `trace --netns`, but UNKNOWN
    except PermissionError:
        raise DoctorUnknown(f"namespace {ref!r}: permission denied (needs root)") from None
    if inode == own_inode:
        return None, True, ref, inode
    return path, False, ref, inode


def build_report(ns_ref: Optional[str], interval: float, with_plan: bool) -> dict:
    reader = Reader()
    ns, own, label, inode = _resolve_netns(ns_ref)
    privileges = _privileges()
    fig = read_figures(ns, own, label, interval, reader)
    if fig.mem_pages is None and fig.orphans is None and fig.counters_after is None:
        raise DoctorUnknown("could not read /proc/net/sockstat nor /proc/net/netstat: "
                            + "; ".join(f"{u['what']}: {u['why']}" for u in reader.unavailable))
    diagnosis = rules.diagnose(fig)
    plan = probe_plan(privileges, reader) if with_plan else None
    page = fig.page_size
    mx = fig.tcp_max_orphans
    return {
        "schema": 1,
        "verdict": diagnosis.severity,
        "exit_code": diagnosis.exit_code,
        "host": {"hostname": socket.gethostname(), "kernel": os.uname().release,
                 "page_size": page, "mem_total_bytes": fig.mem_total, "euid": os.geteuid(),
                 "privileges": privileges},
        "netns": {"requested": ns_ref, "inode": inode, "own": own},
        "tcp": {"inuse": fig.inuse, "inuse6": fig.inuse6, "orphan": fig.orphans, "tw": fig.tw,
                "alloc": fig.alloc, "mem_pages": fig.mem_pages,
                "mem_bytes": None if fig.mem_pages is None else fig.mem_pages * page,
                "mem_margin_pages": fig.mem_margin["pages"] if fig.mem_margin else 0,
                "memory_pressure": fig.pressure},
        "limits": {
            "tcp_mem_pages": list(fig.tcp_mem) if fig.tcp_mem else None,
            "tcp_mem_bytes": [v * page for v in fig.tcp_mem] if fig.tcp_mem else None,
            "tcp_max_orphans": mx,
            # orphans above these are killed at that shift (orphans << shift > max)
            "orphan_kill_above": None if mx is None else
            {"shift0": mx, "shift1": mx >> 1, "shift2": mx >> 2},
            "tcp_max_tw_buckets": fig.tcp_max_tw_buckets,
            "tcp_rmem": list(fig.tcp_rmem) if fig.tcp_rmem else None,
            "tcp_wmem": list(fig.tcp_wmem) if fig.tcp_wmem else None,
            "tcp_tw_reuse": fig.tcp_tw_reuse},
        "worst_case": rules.worst_cases(fig),
        "counters": {"interval_s": interval, "TcpExt": rules.counter_table(fig)},
        "findings": diagnosis.findings,
        "sysctl_snippet": diagnosis.snippet,
        "plan": plan,
        "unavailable": reader.unavailable,
        "not_checked": diagnosis.not_checked,
    }


# --------------------------------------------------------------------------- printing

_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


def _n(value) -> str:
    return "?" if value is None else str(value)


def render(r: dict, console) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def heading(title: str) -> None:
        console.print()
        console.print(Text(title, style="bold underline"))

    def grid(rows, first_style: str = "") -> None:
        # Two columns, so a long second column wraps under itself, not under the first.
        t = Table.grid(padding=(0, 1))
        t.add_column(style=first_style, no_wrap=True)
        t.add_column()
        for left, right in rows:
            t.add_row(Text(left), right if isinstance(right, Text) else Text(right))
        console.print(t)

    size, page = rules.size, r["host"]["page_size"]
    ns = r["netns"]
    where = "own" if ns["own"] else ns["requested"]
    console.print(Text.assemble(("tcpoom doctor", "bold"),
                                f"  {r['host']['hostname']}, kernel {r['host']['kernel']}, "
                                f"network namespace {where} (inode {_n(ns['inode'])})"))
    missing = len(r["not_checked"])
    console.print(Text.assemble("verdict: ", (r["verdict"].upper(), _STYLE[r["verdict"]]),
                                f" (exit code {r['exit_code']})",
                                (f"; {missing} check{'s' * (missing > 1)} not possible: "
                                 f"see 'Not available'" if missing else "", "yellow")))

    tcp, lim = r["tcp"], r["limits"]
    heading("TCP now")
    rows = []
    tm, mem = lim["tcp_mem_pages"], tcp["mem_pages"]
    line = f"{_n(mem)} pages" + ("" if mem is None else f" = {size(mem * page)}")
    if tm and mem is not None:
        line += f", {100.0 * mem / max(tm[2], 1):.0f}% of tcp_mem[2]"
    margin = tcp.get("mem_margin_pages")
    if margin and mem is not None:
        line += (f"; ± {margin} pages ({size(margin * page)}) held in per-CPU reserves "
                 f"(6.0+: the figure is global)")
    rows.append(("memory (host)", line))
    rows.append(("tcp_mem", "?" if not tm else
                 f"{tm[0]} / {tm[1]} / {tm[2]} pages (low / pressure / high) = "
                 f"{size(tm[0] * page)} / {size(tm[1] * page)} / {size(tm[2] * page)}: "
                 f"pages, not bytes (a page is {page} bytes)"))
    press = tcp["memory_pressure"]
    rows.append(("memory pressure", ("?" if press is None else ("yes" if press else "no"))
                 + " (entered above tcp_mem[1], left below tcp_mem[0])"))
    mx, orph = lim["tcp_max_orphans"], tcp["orphan"]
    line = _n(orph)
    if mx is not None:
        line += (f" of tcp_max_orphans {mx}" + (f" ({100.0 * orph / mx:.0f}%)" if mx and orph
                                               is not None else "")
                 + f"; killed above {mx} / {mx >> 1} / {mx >> 2} at shift 0 / 1 / 2")
    rows.append(("orphans (host)", line))
    tw, mtw = tcp["tw"], lim["tcp_max_tw_buckets"]
    rows.append(("TIME_WAIT (netns)", f"{_n(tw)} of tcp_max_tw_buckets {_n(mtw)}"
                 + (f" ({100.0 * tw / mtw:.0f}%)" if tw is not None and mtw else "")))
    rows.append(("sockets", f"{_n(tcp['inuse'])} IPv4 + {_n(tcp['inuse6'])} IPv6 in use "
                            f"(netns), {_n(tcp['alloc'])} allocated (host)"))
    if lim["tcp_rmem"] and lim["tcp_wmem"]:
        rows.append(("buffers (netns)",
                     f"tcp_rmem {' '.join(map(str, lim['tcp_rmem']))}, tcp_wmem "
                     f"{' '.join(map(str, lim['tcp_wmem']))} bytes (min default max)"))
    wc = r["worst_case"]
    if wc["buffer_bytes"] is not None:
        rows.append(("worst case", f"{wc['sockets']} sockets x (tcp_rmem[2] + tcp_wmem[2]) = "
                                   f"{size(wc['buffer_bytes'])} against tcp_mem[2] "
                                   f"{size(wc['tcp_mem_high_bytes'])}"))
    if wc["orphan_bytes"] is not None:
        rows.append(("worst case", f"tcp_max_orphans x 64 KiB unswappable = "
                                   f"{size(wc['orphan_bytes'])}"
                                   + (f" against MemTotal {size(wc['mem_total_bytes'])}"
                                      if wc["mem_total_bytes"] else "")))
    grid(rows, first_style="bold")

    heading(f"TcpExt counters (delta over {r['counters']['interval_s']:g} s)")
    t = Table(box=box.SIMPLE_HEAD, show_edge=False)
    t.add_column("counter")
    t.add_column("total", justify="right")
    t.add_column("delta", justify="right")
    for name, v in r["counters"]["TcpExt"].items():
        delta = v["delta"]
        t.add_row(name, _n(v["total"]),
                  Text(_n(delta if not delta else f"+{delta}"), style="bold" if delta else ""))
    console.print(t)

    heading("Findings")
    for f in r["findings"]:
        console.print(Text.assemble((f"[{f['severity']}] ", _STYLE[f["severity"]]),
                                    (f["title"], "bold")))
        rows = [("  ·", e) for e in f["evidence"]] + [("  →", a) for a in f["advice"]]
        if f["why"]:
            rows.append(("  ·", Text("why: " + f["why"], style="dim")))
        if rows:
            grid(rows)
    if r["sysctl_snippet"]:
        console.print()
        # Never wrapped: it is meant to be copied into a file as it is.
        console.print(Text(r["sysctl_snippet"].rstrip(), style="green"), soft_wrap=True)

    p = r["plan"]
    if p is not None:
        heading("What tcpoom can attach here (probe plan)")
        if p["available"]:
            console.print(Text(f"engine {p['engine']}" + "".join(f"; {n}" for n in p["notes"])))
            t = Table(box=box.SIMPLE_HEAD, show_edge=False)
            for col in ("family", "method", "target", "sampled from /proc"):
                t.add_column(col)
            for name, fam in p["families"].items():
                t.add_row(name, fam["method"], Text(fam["target"]),
                          Text(", ".join(fam["sampled"]) or "-"))
            console.print(t)
            console.print(Text("`tcpoom probes` gives every field's fidelity and why each "
                               "better method was rejected", style="dim"))
        if p["partial"]:
            console.print(Text("partial: gathered without full privileges", style="yellow"))
            grid([("  ·", why) for why in p["partial_why"]])

    if r["unavailable"] or r["not_checked"]:
        heading("Not available")
        grid([("  ·", f"{u['what']}: {u['why']}") for u in r["unavailable"]]
             + [("  ·", f"not checked: {n}") for n in r["not_checked"]])


@click.command(cls=DoctorCommand, help=__doc__, short_help='Diagnose socket memory now from /proc; no BPF.')
@click.option("--netns", "netns_ref", metavar="NAME|PATH|INODE",
              help="Network namespace whose per-namespace figures to read (TIME_WAIT, "
                   "tcp_max_tw_buckets, tcp_rmem/tcp_wmem, TcpExt counters); default the "
                   "caller's. Another namespace needs root.")
@click.option("--interval", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Seconds between the two reads of /proc/net/netstat (the counters' deltas).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys above) instead of text.")
@click.option("--no-plan", is_flag=True,
              help="Skip the probe plan (read from BTF, tracefs and kallsyms; no BPF is loaded).")
def doctor(netns_ref: Optional[str], interval: float, as_json: bool, no_plan: bool) -> None:
    report = build_report(netns_ref, interval, not no_plan)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        from rich.console import Console
        render(report, Console(highlight=False, soft_wrap=False))
    if report["exit_code"]:
        raise Verdict(report["exit_code"])
