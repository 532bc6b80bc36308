"""The one small exception hierarchy. Exit codes are decided in cli/app.py main() only."""
from __future__ import annotations


class TcpoomError(Exception):
    """An error with a message fit for one line on the terminal."""

    exit_code = 1
    kind = "error"          # the word after "tcpoom:" on its line


class UsageError(TcpoomError):
    exit_code = 2
    kind = "usage"


class PermissionNeeded(TcpoomError):
    """Not root (or without CAP_BPF + CAP_PERFMON)."""

    exit_code = 77


class KernelUnsupported(TcpoomError):
    """The running kernel cannot give what was asked (no BTF, no method left)."""

    exit_code = 3


class LoadError(TcpoomError):
    """libbpf or the verifier refused a program."""

    exit_code = 4


class DamagedInput(TcpoomError):
    """Reported, but from a file cut short or damaged: read up to its last
    complete block."""

    exit_code = 5
    kind = "warning"        # a result was produced all the same
