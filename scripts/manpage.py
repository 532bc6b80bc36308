"""tcpoom(1), written from the click commands themselves, so the page says
what `tcpoom COMMAND --help` says (scripts/build-deb installs it).

    python3 -m scripts.manpage > tcpoom.1
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import List

import click

from tracer import __version__
from tracer.cli.app import cli

EXIT_CODES = (("0", "ok"), ("1", "error"), ("2", "usage error"), ("3", "kernel unsupported"),
              ("4", "BPF load refused"), ("5", "reported from a file cut short or damaged"),
              ("77", "needs root (or CAP_BPF and CAP_PERFMON)"), ("130", "interrupted"))


def esc(text: str) -> str:
    """Text for roff: backslashes, hyphens, and no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in text.splitlines())


def paragraphs(text: str) -> List[str]:
    out, cur = [], []
    for ln in (text or "").strip().splitlines():
        if ln.strip():
            cur.append(ln.strip())
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return [p for p in out if p != "\b"]


def command_section(name: str, cmd: click.Command) -> List[str]:
    ctx = click.Context(cmd, info_name=f"tcpoom {name}")
    lines = [f".SS {esc(name)}", f".B {esc(' '.join(cmd.collect_usage_pieces(ctx)).join(['tcpoom ' + name + ' ', '']))}"]
    for p in paragraphs(cmd.help or ""):
        lines += [".PP", esc(p)]
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if not record:
            continue
        opts, help_text = record
        lines += [".TP", f".B {esc(opts)}", esc(help_text or "")]
    return lines


def render() -> str:
    date = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or
                                           datetime.datetime.now().timestamp(), datetime.timezone.utc)
    ctx = click.Context(cli, info_name="tcpoom")
    lines = [f'.TH TCPOOM 1 "{date:%Y-%m-%d}" "tcpoom {__version__}" "User Commands"',
             ".SH NAME", "tcpoom \\- trace the Linux kernel's TCP socket\\-memory decisions",
             ".SH SYNOPSIS", ".B tcpoom", "[\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] ...",
             ".SH DESCRIPTION"]
    for p in paragraphs(cli.help or ""):
        lines += [".PP", esc(p)]
    lines += [".SH COMMANDS"]
    for name in cli.list_commands(ctx):
        lines += command_section(name, cli.get_command(ctx, name))
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_CODES:
        lines += [".TP", f".B {code}", esc(meaning)]
    lines += [".SH FILES", ".TP", ".B /run/tcpoom",
              "per\\-boot caches (kernel facts, a minimised kernel BTF); root only, gone at reboot",
              ".SH ENVIRONMENT", ".TP", ".B TCPOOM_ENGINE", "co\\-re, bcc or auto (the default)",
              ".TP", ".B TCPOOM_NO_FACTS_CACHE=1, TCPOOM_NO_BTF_CACHE=1, TCPOOM_NO_PRELOAD=1",
              "turn off the per\\-boot caches and the early BPF load",
              ".TP", ".B TCPOOM_NO_OWNER=1",
              "no owner tracking, as \\-\\-no\\-owner: every event names the task it ran in (saves "
              "about 1.2 us of kernel time a connection)",
              ".SH REQUIREMENTS",
              "Linux 5.8 or newer with BTF (/sys/kernel/btf/vmlinux) for the co\\-re engine, or the "
              "kernel's headers and python3\\-bpfcc for the bcc engine; libbpf1; root, or CAP_BPF and "
              "CAP_PERFMON.  report, export, parse and replay need neither.",
              ".SH SEE ALSO", ".BR ss (8),", ".BR nstat (8),", ".BR bpftool (8)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
