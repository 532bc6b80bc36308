"""The Lab: a private network namespace, a sysctl guard, and one scenario run at a time."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from tracer.host import netns

from . import hostlock, kmsg
from .context import Context, Expected, LabError
from .scenarios import SCENARIOS
from .sysctls import SysctlConflict, SysctlGuard, process_alive, recover_from_killed_lab
from .tcp_mem import nudge_out_of_pressure


@dataclass
class Result:
    scenario: str
    count: int
    netns_name: str
    netns_inode: int
    deltas: Dict[str, int]        # TcpExt counter movements in the lab's namespace
    expected: Expected            # counter -> (minimum, maximum or None)
    kmsg_lines: Dict[str, int]    # kernel log lines caused, per pattern in kmsg.PATTERNS
    kmsg_suppressed: int          # sum of "net_ratelimit: N callbacks suppressed"
    duration_s: float
    details: Dict[str, Any] = field(default_factory=dict)

    def failures(self) -> List[str]:
        problems = []
        for name, (low, high) in self.expected.items():
            got = self.deltas.get(name, 0)
            if got < low or (high is not None and got > high):
                want = f"{low}" if high == low else f"{low}..{'' if high is None else high}"
                problems.append(f"{name} moved by {got}, expected {want}")
        return problems

    @property
    def ok(self) -> bool:
        return not self.failures()

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["failures"] = self.failures()
        return data


def remove_stale_namespaces(prefix: str) -> List[str]:
    """Delete namespaces named `<prefix><pid>-...` whose creating process is gone."""
    removed = []
    names = os.listdir(netns.NETNS_RUN_DIR) if os.path.isdir(netns.NETNS_RUN_DIR) else []
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and not process_alive(int(pid)):
            netns.delete(name)
            removed.append(name)
    return removed


class Lab:
    """Create a private namespace on entry; restore sysctls and delete it on exit.

    Attach a tracer between entering and run(): filter it on netns_inode.
    """

    def __init__(self, allow_global_sysctls: bool = False, prefix: str = "tcpoom-lab-") -> None:
        self.allow_global_sysctls = allow_global_sysctls
        self.prefix = prefix
        self.netns_name: Optional[str] = None
        self.netns_inode: Optional[int] = None
        self.sysctls: Optional[SysctlGuard] = None
        self.recovered: Dict[str, str] = {}
        self._stack: Optional[contextlib.ExitStack] = None
        self._busy = threading.Lock()

    def __enter__(self) -> "Lab":
        hostlock.acquire()
        try:
            return self._enter()
        except BaseException:
            hostlock.release()
            raise

    def _enter(self) -> "Lab":
        try:
            self.recovered = recover_from_killed_lab()
        except SysctlConflict as exc:
            raise LabError(str(exc)) from None
        if self.recovered:
            print(f"lab: restored host-wide sysctls left changed by a killed lab: "
                  f"{self.recovered}", file=sys.stderr)
        for name in remove_stale_namespaces(self.prefix):
            print(f"lab: deleted namespace {name} left by a killed lab", file=sys.stderr)
        stack = contextlib.ExitStack()
        try:
            # Exit order is the reverse: signal handlers, then sysctls, then the namespace.
            self.netns_name = stack.enter_context(netns.temporary(self.prefix))
            self.netns_inode = netns.netns_inode(self.netns_name)
            self.sysctls = SysctlGuard()
            stack.callback(self.sysctls.close)
            # A pressure state left over (by a killed lab, say) would hide the entry into
            # pressure that the tcp_mem scenarios count. A host really short of memory
            # stays in it: only a total below tcp_mem[0] lets TCP leave.
            nudge_out_of_pressure(self.netns_name)
            self._install_signal_handlers(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            try:
                stack.close()
            finally:
                hostlock.release()

    def _install_signal_handlers(self, stack: contextlib.ExitStack) -> None:
        # Python runs signal handlers on the main thread only, and only it may install them.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, self._on_signal)
            stack.callback(signal.signal, signum, previous)

    def _on_signal(self, signum: int, frame) -> None:
        # Host-wide sysctls first, right here: unwinding could block on a stuck thread.
        if self.sysctls is not None:
            self.sysctls.restore_all()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def run(self, scenario: str, count: Optional[int] = None) -> Result:
        if self._stack is None:
            raise LabError("use the Lab in a `with` block before running scenarios")
        try:
            spec = SCENARIOS[scenario]
        except KeyError:
            raise LabError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}") from None
        if spec.needs_global_sysctls and not self.allow_global_sysctls:
            raise LabError(
                f"{scenario} changes host-wide sysctls (restored afterwards); "
                f"pass allow_global_sysctls=True / --allow-global-sysctls to allow it")
        if not self._busy.acquire(blocking=False):
            raise LabError("this Lab is already running a scenario; one at a time")
        try:
            return self._run(spec, spec.default_count if count is None else count)
        finally:
            self._busy.release()

    def _run(self, spec, count: int) -> Result:
        ctx = Context(self.netns_name, self.sysctls, self.allow_global_sysctls)
        log = kmsg.KernelLog()
        try:
            before = ctx.counters()
            started = time.monotonic()
            try:
                expected = spec.run(ctx, count)
            finally:
                self.sysctls.restore_all()
            duration = time.monotonic() - started
            after = ctx.counters()
            messages = log.read_new()
        finally:
            log.close()
        if log.error:
            ctx.details["kmsg_error"] = log.error
        return Result(
            scenario=spec.name, count=count,
            netns_name=self.netns_name, netns_inode=self.netns_inode,
            deltas={name: after[name] - before[name] for name in after},
            expected=expected,
            kmsg_lines=kmsg.count_lines(messages),
            kmsg_suppressed=kmsg.suppressed_total(messages),
            duration_s=round(duration, 3),
            details=ctx.details,
        )
