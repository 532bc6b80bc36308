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
from typing import Optional, Tuple

import click

from tracer.analysis import doctor as rules
from tracer.errors import TcpoomError, UsageError
from tracer.host import netns
from tracer.host.figures import Reader, read_figures
from tracer.host.privileges import privileges as _privileges
from tracer.kernel.plan_without_bpf import plan_without_bpf

EXIT_UNKNOWN = 3


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


def _resolve_netns(ref: Optional[str]) -> Tuple[object, bool, str, Optional[int]]:
    """(reference for procfs, own namespace?, label, inode or None)."""
    own_inode = netns.netns_inode()
    if ref is None:
        return None, True, "own", own_inode
    try:
        path, inode = netns.lookup(ref)
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
    plan = None
    if with_plan:
        plan, misses = plan_without_bpf(privileges)
        for what, why in misses:
            reader.miss(what, why)
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
        from tracer.render.doctor_view import render
        render(report, Console(highlight=False, soft_wrap=False))
    if report["exit_code"]:
        raise Verdict(report["exit_code"])
