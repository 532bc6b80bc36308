"""Load the BPF object into the kernel on a second thread while the main one
imports the CLI.

Start-up to attached is mostly Python importing click and the tracer (~60 ms,
bound to the GIL) and libbpf's load of the object: parsing the kernel's BTF
(~13 ms) and the verifier (~12 ms), C and kernel work that runs with the GIL
released. Opened and configured first on the main thread (a few ms of small
libbpf calls, each of which would otherwise wait for the GIL), the object is
then loaded on the other core while click is imported.

It is a guess: the object is loaded as the command would load it with its
default options (every family, no filter, the default ring buffer, the co-re
engine). `loader.start` takes it only if the parsed options ask for exactly
that, and loads anew otherwise. A guess that fails is dropped without a word:
the normal path loads again with libbpf's messages on, and explains.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

COMMANDS = ("trace", "record", "live")

_thread: Optional[threading.Thread] = None
_facts = None
_session = None


def start(argv) -> None:
    """Begin loading for `tcpoom <command> ...` if the command attaches."""
    global _facts, _thread
    if not argv or argv[0] not in COMMANDS or os.geteuid() != 0 \
            or any(a in ("-h", "--help") for a in argv[1:]):
        return
    # TCPOOM_LIBBPF_DEBUG: the load's messages are wanted, and this load has none
    if os.environ.get("TCPOOM_NO_PRELOAD") or os.environ.get("TCPOOM_LIBBPF_DEBUG"):
        return
    try:
        from . import facts as kernel_facts, libbpf, loader
        from .plan import build, choose_engine
        _facts = kernel_facts.gather()
        if choose_engine(_facts, os.environ.get("TCPOOM_ENGINE") or "auto") != "co-re":
            return
        session = loader.Session(build(_facts, engine="co-re"), loader.Filters(),
                                 loader.RINGBUF_DEFAULTS[argv[0]]).prepare()
    except Exception:       # noqa: BLE001 - a failed guess; the normal path explains
        return
    # libbpf's printer is a Python callback: ~1000 calls a load, each waiting
    # for the GIL the main thread holds while it imports
    libbpf.quiet(True)
    _thread = threading.Thread(target=_load, args=(session, libbpf), name="tcpoom-preload",
                               daemon=True)
    _thread.start()


def _load(session, libbpf) -> None:
    global _session
    try:
        session.load_prepared(fallback=False)
        session.preloaded = True
        _session = session
    except BaseException:       # noqa: BLE001
        session.close()
    finally:
        libbpf.quiet(False)


def facts():
    """The kernel facts the preload gathered, handed over once (None when it
    did not run): the capture of this process plans with the same facts."""
    global _facts
    handed, _facts = _facts, None
    return handed


def take():
    """The preloaded session, loaded but not attached; None if there is none.
    The caller owns it: attach it or close it."""
    global _session, _thread
    if _thread is None:
        return None
    _thread.join()
    _thread = None
    session, _session = _session, None
    return session


def discard() -> None:
    """Close a preloaded session nobody took (usage errors, --help, bcc)."""
    session = take()
    if session is not None:
        session.close()
