"""Change sysctls for a scenario and always put them back.

Per-namespace sysctls (tcp_max_tw_buckets, tcp_rto_max_ms, tcp_orphan_retries, ...) vanish
with the lab's namespace, but are still restored after each run so the next run in the same
Lab starts clean. Host-wide ones (tcp_mem, tcp_max_orphans) are the dangerous ones: a host
left with tcp_mem "10 20 40" refuses memory to every TCP socket it has. So they are restored
by whichever comes first of: the scenario's own finally, a watchdog timer for the changes
that carry a time cap, the Lab's SIGINT/SIGTERM handlers, and atexit. Because not even that
survives SIGKILL, the original values are also written to RECOVERY_FILE while a host-wide
change is in force, and the next Lab puts them back.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Dict, List, Optional, Tuple

from tracer import procfs
from tracer.netns import NetnsRef

RECOVERY_FILE = "/run/tcpoom-lab-sysctls.json"


class SysctlConflict(Exception):
    """Another live lab holds host-wide sysctl changes; running now would save its values."""


# Key: (sysctl name, namespace reference or None for host-wide).
_Key = Tuple[str, Optional[object]]

_live_guards: "List[SysctlGuard]" = []
_atexit_registered = False


def _restore_live_guards() -> None:
    for guard in list(_live_guards):
        guard.restore_all()


class SysctlGuard:
    """Remembers the first value seen of every sysctl it changes, and restores them."""

    def __init__(self) -> None:
        self._saved: Dict[_Key, str] = {}
        self._order: List[_Key] = []
        self._timers: Dict[_Key, threading.Timer] = {}
        # The watchdog timer, a signal handler and the main thread's finally may all restore.
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

    def set_for_at_most(self, name: str, value, seconds: float, netns: NetnsRef = None) -> None:
        """Set a sysctl that must not stay changed longer than `seconds`, even if we hang."""
        self.set(name, value, netns)
        timer = threading.Timer(seconds, self.restore, args=(name, netns))
        timer.daemon = True
        timer.name = f"sysctl-watchdog:{name}"
        with self._lock:
            old = self._timers.pop((name, netns), None)
            self._timers[(name, netns)] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def restore(self, name: str, netns: NetnsRef = None) -> None:
        """Put one sysctl back; harmless if it was never changed or is already back."""
        key: _Key = (name, netns)
        with self._lock:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            original = self._saved.pop(key, None)
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

    def changed(self) -> List[_Key]:
        with self._lock:
            return list(self._order)

    def close(self) -> None:
        self.restore_all()
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
        os.unlink(RECOVERY_FILE)  # torn by a crash mid-write; the old file was replaced atomically
        return {}
    pid = int(state.get("pid", 0))
    if pid and pid != os.getpid() and _process_alive(pid):
        raise SysctlConflict(f"lab process {pid} has host-wide sysctls changed right now "
                             f"({', '.join(state.get('sysctls', {}))}); wait for it to finish")
    restored = {}
    for name, value in state.get("sysctls", {}).items():
        procfs.write_sysctl(name, value)
        restored[name] = value
    os.unlink(RECOVERY_FILE)
    return restored


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
