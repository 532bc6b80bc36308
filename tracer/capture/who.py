"""Who an event is about, for the filters the kernel side cannot apply: --cgroup
PATH and --container ID match the socket's owner by name, and the kernel side
knows only cgroup ids (bpf/owner.bpf.h). --pid is applied in the kernel (the
owner's tgid there too)."""
from __future__ import annotations

from typing import Callable, Optional

from tracer.host import cgroups as cg
from tracer.kernel.loader import Filters
from tracer.model.containers import V1_MEMORY, V2, Identity, matches_path


def names_for(filters: Filters) -> cg.Cgroups:
    return cg.Cgroups()


def predicate(filters: Filters, names: cg.Names) -> Optional[Callable]:
    """A test for events, or None when no such filter is set (the fast path)."""
    if not filters.cgroup and not filters.container:
        return None

    def paths(e):
        out = []
        for kind, cgid in ((V2, e.owner_cgroup), (V2, e.sk_cgroup), (V1_MEMORY, e.memcg)):
            p = names.path(kind, cgid) if cgid else None
            if p:
                out.append((kind, cgid, p))
        return out

    def wanted(e) -> bool:
        found = paths(e)
        if filters.cgroup and not any(matches_path(p, filters.cgroup) for _, _, p in found):
            return False
        if filters.container:
            # the identity as resolved on this host: pod names and container names too
            if not any(Identity.from_json(names.identity(kind, cgid) or {"path": p}).matches(filters.container)
                       for kind, cgid, p in found):
                return False
        return True
    return wanted


def only(payload, n: int, keep: Callable) -> tuple:
    """The records of a framed batch that `keep` accepts, framed again."""
    from tracer.model import events as ev
    kept = [bytes(payload[i * ev.STRIDE:(i + 1) * ev.STRIDE]).ljust(ev.STRIDE, b"\0")
            for i in range(n) if keep(ev.Event.decode(payload, ev.at(i)))]
    return b"".join(kept), len(kept)
