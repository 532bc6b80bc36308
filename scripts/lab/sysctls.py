"""Change sysctls for a scenario and always put them back.

Per-namespace sysctls (tcp_max_tw_buckets, tcp_rto_max_ms, ...) vanish with the lab's
namespace, but are still restored after each run so the next run in the same Lab starts
clean. Host-wide ones (tcp_mem, tcp_max_orphans) are the dangerous ones: a host left with
tcp_mem "10 20 40" refuses memory to every TCP socket it has. So they are restored by
whichever comes first of: the scenario's own finally, the Lab's SIGINT/SIGTERM handlers,
atexit, and for changes with a time cap a watchdog process. The watchdog is a separate
process in its own session, so it still restores if this one hangs, is killed with
SIGKILL, or its terminal's process group gets a Ctrl-C. Finally, while a host-wide change
is in force the original values are kept in RECOVERY_FILE, and the next Lab puts them back
if this process died without doing so.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from tracer.host import procfs
from tracer.host.netns import NetnsRef

RECOVERY_FILE = "/run/tcpoom-lab-sysctls.json"

# Sleeps until a CLOCK_MONOTONIC deadline (shared by all processes), then writes the
# original value back, but only if the value we set is still there: if someone changed
# it since, it is theirs. Exit status 10 says it restored.
_WATCHDOG = """
import sys, time
path, ours, original, deadline = sys.argv[1], sys.argv[2].split(), sys.argv[3], float(sys.argv[4])
time.sleep(max(0.0, deadline - time.monotonic()))
with open(path) as fh:
    if fh.read().split() != ours:
        sys.exit(0)
with open(path, "w") as fh:
    fh.write(original + "\\n")
sys.exit(10)
"""
_WATCHDOG_RESTORED = 10


class SysctlConflict(Exception):
    """Another live lab holds host-wide sysctl changes; running now would save its values."""


# Key: (sysctl name, namespace reference or None for host-wide).
_Key = Tuple[str, Optional[object]]

_live_guards: "List[SysctlGuard]" = []
_atexit_registered = False


def _restore_live_guards() -> None:
    for guard in list(_live_guards):
        guard.close()


class SysctlGuard:
    """Remembers the first value seen of every sysctl it changes, and restores them."""

    def __init__(self) -> None:
        self._saved: Dict[_Key, str] = {}
        self._order: List[_Key] = []
        self._watchdogs: Dict[_Key, Tuple[subprocess.Popen, float]] = {}
        self.restored_at: Dict[_Key, float] = {}  # time.monotonic() of each restore
        # A signal handler and the main thread's finally may both restore.
        self._lock = threading.RLock()
        global _atexit_registered
        if not _atexit_registered:
            atexit.register(_restore_live_guards)
            _atexit_registered = True
        _live_guards.append(self)

    def set(self, name: str, value, netns: NetnsRef = None) -> None:
        """Set a sysctl; netns None means the host-wide table (or the caller's namespace)."""
        key: _Key = (name, netns)
        with self._lock:
            if key not in self._saved:
                self._saved[key] = procfs.read_sysctl(name, netns)
                self._order.append(key)
                if netns is None:
                    self._write_recovery_file()
            procfs.write_sysctl(name, value, netns)

    def set_for_at_most(self, name: str, value, seconds: float) -> None:
        """Set a host-wide sysctl that must not stay changed longer than `seconds`."""
        key: _Key = (name, None)
        deadline = time.monotonic() + seconds
        with self._lock:
            original = self._saved.get(key)
            if original is None:
                original = procfs.read_sysctl(name)
            # Started BEFORE the write: a lab killed between the two leaves either
            # nothing changed or a watchdog already running (it restores only if the
            # value is still ours at its deadline). The deadline was taken before, so
            # the cap holds however long starting it takes.
            watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, procfs.sysctl_path(name), str(value),
                 original, repr(deadline)],
                start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.set(name, value)
            old = self._watchdogs.pop(key, None)
            self._watchdogs[key] = (watchdog, deadline)
        if old is not None:
            _stop(old[0])

    def restore(self, name: str, netns: NetnsRef = None) -> None:
        """Put one sysctl back; harmless if it was never changed or is already back."""
        key: _Key = (name, netns)
        with self._lock:
            watchdog = self._watchdogs.pop(key, None)
            original = self._saved.pop(key, None)
            if watchdog is not None:
                proc, deadline = watchdog
                if _stop(proc) == _WATCHDOG_RESTORED:
                    self.restored_at[key] = deadline
            if original is None:
                return
            self._order.remove(key)
            try:
                procfs.write_sysctl(name, original, netns)
            except OSError as exc:
                if netns is None:
                    raise
                # The namespace is already gone, and its sysctls with it.
                print(f"lab: could not restore {name} in {netns}: {exc}", file=sys.stderr)
            self.restored_at.setdefault(key, time.monotonic())
            if not any(ns is None for _, ns in self._order):
                self._remove_recovery_file()

    def restore_all(self) -> None:
        """Restore everything, newest first; one failure does not stop the others."""
        errors = []
        with self._lock:
            for name, netns in reversed(list(self._order)):
                try:
                    self.restore(name, netns)
                except OSError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        try:
            self.restore_all()
        finally:
            if self in _live_guards:
                _live_guards.remove(self)

    # -- recovery after SIGKILL ---------------------------------------------------------

    def _write_recovery_file(self) -> None:
        saved = {name: value for (name, ns), value in self._saved.items() if ns is None}
        tmp = RECOVERY_FILE + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"pid": os.getpid(), "sysctls": saved}, fh)
        os.replace(tmp, RECOVERY_FILE)

    def _remove_recovery_file(self) -> None:
        try:
            os.unlink(RECOVERY_FILE)
        except FileNotFoundError:
            pass


def _stop(proc: subprocess.Popen) -> Optional[int]:
    """Stop a watchdog we started (if it has not finished) and return its exit status."""
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        return None


def recover_from_killed_lab() -> Dict[str, str]:
    """Restore host-wide sysctls a killed lab left changed; return what was restored.

    Raises SysctlConflict if the lab that wrote the file is still running.
    """
    try:
        with open(RECOVERY_FILE) as fh:
            state = json.load(fh)
    except FileNotFoundError:
        return {}
    except ValueError:
        os.unlink(RECOVERY_FILE)  # unreadable; it is only ever replaced whole, so not ours
        return {}
    pid = int(state.get("pid", 0))
    if pid and pid != os.getpid() and process_alive(pid):
        raise SysctlConflict(f"lab process {pid} has host-wide sysctls changed right now "
                             f"({', '.join(state.get('sysctls', {}))}); wait for it to finish")
    restored = {}
    for name, value in state.get("sysctls", {}).items():
        procfs.write_sysctl(name, value)
        restored[name] = value
    os.unlink(RECOVERY_FILE)
    return restored


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
