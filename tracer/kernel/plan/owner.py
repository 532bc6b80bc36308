"""Where the socket's owner is noted (bpf/owner.bpf.h) and how good the name is,
per engine: the CO-RE programs note it at process-context hooks, the bcc
engine does not track it."""
from __future__ import annotations

import os
from typing import Dict

from ..facts import KernelFacts
from .checks import need_tracepoint
from .model import FamilyPlan

_BTF_METHODS = ("fentry", "tp_btf")
#: TCPOOM_NO_OWNER=1: no owner tracking. It is most of the programs' time per
#: connection (a socket's storage is created at its first send, receive or
#: close: about 1.2 us of 1.4 a connection, docs/performance.md); a host making
#: connections at a very high rate may rather keep the context task only.
NO_OWNER_ENV = "TCPOOM_NO_OWNER"


def owner_plan(f: KernelFacts, fams: Dict[str, FamilyPlan]) -> Dict:
    """The CO-RE engine's owner tracking.

    The owner is noted at hooks that run in the owner's process context, and read
    at every event: the state changes only a system call makes (listen, close,
    shutdown; sock:inet_sock_set_state; not connect: a connected socket is noted at its
    first send or receive), every send and receive
    (sock:sock_send_length/sock_recv_length, 6.3+), or every read
    (tcp:tcp_rcv_space_adjust, 4.16+) where those do not exist. Store:
    bpf_sk_storage where every program that reads it gets BTF pointers (tp_btf,
    fentry) and tracing programs may use it (5.11+); it goes with the socket and
    is cloned to accepted sockets. Elsewhere a hash map keyed by the socket,
    emptied at tcp:tcp_destroy_sock. Where the TIME_WAIT inference attaches to
    inet_sock_set_state with the same kind, the loader lets its program note the
    owner instead of owner_state_* (one program run a state change)."""
    users = [fp for fp in fams.values() if fp.programs]
    if not users:
        return {}
    if os.environ.get(NO_OWNER_ENV) == "1":
        return {"store": "none", "programs": [], "fidelity": "context-only",
                "how": f"owner tracking turned off ({NO_OWNER_ENV}=1): every event names the task "
                       "it ran in"}
    state_btf = need_tracepoint(f, "inet_sock_set_state", 3, raw=False) is None
    state_raw = need_tracepoint(f, "inet_sock_set_state", 3, raw=True) is None
    if not (state_btf or state_raw):
        return {"store": "none", "programs": [], "fidelity": "context-only",
                "how": "no process-context hook (sock:inet_sock_set_state is missing): "
                       "every event names the task it ran in"}
    btf = state_btf and "tp_btf" not in f.denied_methods
    storage = btf and f.version() >= (5, 11) and all(fp.method in _BTF_METHODS for fp in users)
    kind = "btf" if btf else "raw"
    programs = [f"owner_state_{kind}"]
    seen = ["listen", "close", "shutdown"]
    io = btf and all(need_tracepoint(f, tp, 3, raw=False) is None
                     for tp in ("sock_send_length", "sock_recv_length"))
    if io:
        programs += ["owner_send_btf", "owner_recv_btf"]
        seen.append("every send and receive")
    elif need_tracepoint(f, "tcp_rcv_space_adjust", 1, raw=not btf) is None:
        programs.append(f"owner_rcvspace_{kind}")
        seen.append("every read (sends are not seen)")
    blind = []
    if not storage:
        if need_tracepoint(f, "tcp_destroy_sock", 1, raw=not btf) is None:
            programs.append(f"owner_destroy_{kind}")
        else:
            blind.append("no tcp:tcp_destroy_sock: a socket's entry is dropped only when the "
                         "LRU map is full, so a reused socket address can name a former owner")
    if not storage:
        blind.append("accepted sockets are named from their first read or close, not from accept")
    blind.append("sockets opened before tcpoom started and not used since are named by the context "
                 "task (context-only)")
    return {
        "store": "sk_storage" if storage else "hash",
        "programs": programs,
        "fidelity": "last-known",
        "how": ("the process that last used the socket in process context (" + ", ".join(seen) + "), "
                "kept through orphaning; `exact` when the event runs in that process, "
                "`context-only` where none was noted"),
        "cgroups": "sk_uid, the socket's cgroup v2 id (sk_cgrp_data) and its memory cgroup (sk_memcg) "
                   "on every event: exact",
        "blind_spot": "; ".join(blind),
    }


def bcc_owner(any_bpf: bool) -> Dict:
    """The bcc engine does not track the owner (bpf/tcpoom_bcc.c has no owner hooks)."""
    if not any_bpf:
        return {}
    return {"store": "none", "programs": [], "fidelity": "context-only",
            "how": "the bcc engine does not track the socket's owner: every event names the task it "
                   "ran in (softirq and timer paths: whoever was interrupted)"}
