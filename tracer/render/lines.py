"""One event as one text line or one JSON object (`tcpoom trace`, `replay`)."""
from __future__ import annotations

from typing import Dict

from tracer.model import events as ev
from tracer.model.clock import Clock  # noqa: F401  (one clock model: clock.py)
from tracer.model.event_schema import record
from tracer.model.events import Event
from tracer.model.samples import Sampled

PAGE = 4096


def _pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.0f}%" if den > 0 else "?"


def _orphans(e: Event, s: Sampled) -> str:
    so, sm = s.at(e.ts_ns)
    o = e.orphans if e.orphans >= 0 else so
    m = e.max_orphans if e.max_orphans >= 0 else sm
    mark = "" if e.orphans >= 0 else "~"     # ~: sampled from /proc, not read at the decision
    return f"orphans={mark}{o if o is not None else '?'}/{m if m is not None else '?'}"


def who(e: Event, names=None) -> str:
    """The socket's owner (pid, comm, cgroup or container), then the context task
    when it is another one (softirq, a timer): `pid=` always means the owner."""
    if not e.owner_fidelity:
        return f"pid={e.pid} {e.comm_str}"
    mark = {ev.OWNER_LAST_KNOWN: "", ev.OWNER_EXACT: "", ev.OWNER_CONTEXT: "?"}.get(e.owner_fidelity, "")
    out = f"pid={mark}{e.owner_pid} {e.owner_comm_str}"
    if names is not None:
        _, _, label = names.who(e)
        if label:
            out += f" [{label}]"
    if e.owner_pid != e.pid:
        out += f" ctx={e.pid}/{e.comm_str}"
    return out


def _mem_class(e: Event, names=None) -> str:
    if not e.derived & ev.FIELD_MEM_CLASS:
        return ""
    if e.mem_class == ev.MEM_CLASS_MEMCG:
        where = ""
        if names is not None and e.memcg:
            where = " " + names.name("memory", e.memcg)
        lim = f" {e.memcg_usage}/{e.memcg_limit}p" if e.memcg_limit >= 0 else ""
        return f" class=memcg{where}{lim}"
    return f" class={e.mem_class_name}"


def _drop(e: Event, names=None) -> str:
    """mem_drop: the site, then why (a full receive buffer, or the refusal's class)."""
    site = ev.drop_site(e.verdict)
    if e.verdict & ev.VERDICT_DROP_RCVBUF:
        why = " rcvbuf full"
    else:
        why = _mem_class(e, names)
    mem = f" mem={e.memory_allocated}/{e.tcp_mem2}p" if e.memory_allocated >= 0 else ""
    queue = f" rmem={e.rmem_alloc}/{e.rcvbuf}" if e.rcvbuf >= 0 else ""
    return f"{site}{why}{queue}{mem} netns={e.netns}"


def text(e: Event, clock: Clock, sampled: Sampled, names=None) -> str:
    head = f"{clock.hms(e.ts_ns)} {e.family_name:<11}"
    tail = f"{e.local} > {e.remote} {e.state_name} {who(e, names)}"
    if e.family == ev.OOM_CHECK:
        shift = f"shift={'>=' if e.verdict & ev.VERDICT_SHIFT_MIN else ''}{e.shift}"
        why = ",".join(e.verdict_names()) or "?"
        mem = f"mem={e.memory_allocated}/{e.tcp_mem2}p"
        body = (f"{why} {e.caller_name} {shift} {_orphans(e, sampled)} {mem} "
                f"wq={e.wmem_queued}{' rst' if e.verdict & ev.VERDICT_RESET else ''}")
    elif e.family == ev.TW_OVERFLOW:
        body = f"tw={e.tw_count}/{e.max_tw_buckets} netns={e.netns}"
    elif e.family == ev.MEM_EXCEED:
        side = "recv" if e.verdict & ev.VERDICT_RECV else "send"
        # refused at the hard limit, or under pressure below it: a socket above
        # its fair share (tcp_mem[2] / sockets) is refused there too
        over = ">" if e.memory_allocated > e.tcp_mem2 else "<="
        why = "" if over == ">" else " under pressure, over its share"
        if e.derived & ev.FIELD_MEM_CLASS:
            why = _mem_class(e, names)
        body = (f"{side} alloc={e.memory_allocated}p {over} tcp_mem[2]={e.tcp_mem2}p "
                f"({_pct(e.memory_allocated, e.tcp_mem2)}){why} rmem={e.rmem_alloc}/{e.rcvbuf} "
                f"wq={e.wmem_queued}/{e.sndbuf}")
    elif e.family == ev.MEM_DROP:
        body = _drop(e, names)
    else:
        side = "enter" if e.verdict & ev.VERDICT_ENTER else "leave"
        mem = f"mem={e.memory_allocated}p" if e.memory_allocated >= 0 else "mem=?"
        body = f"{side} {mem} tcp_mem={e.tcp_mem0}/{e.tcp_mem1}/{e.tcp_mem2}p ({e.method_name})"
        if e.verdict & ev.VERDICT_CAUSE_ALLOC:
            body += " below tcp_mem[1]: an allocation failed"
        if e.method == ev.SAMPLED:
            return f"{head} {body}"
    return f"{head} {body} {tail}"


def as_json(e: Event, clock: Clock, sampled: Sampled, names=None) -> Dict:
    """The event in the one documented schema (event_schema.py, docs/events.md)."""
    return record(e, clock, sampled, names)
