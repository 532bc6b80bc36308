"""What the running kernel allows, gathered without attaching anything.

The probe plan (plan/) is a pure function of these facts, so its decisions
can be tested from facts recorded on other kernels (tests/data/facts-*.json).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional

from . import btf as btf_mod, libbpf
from .rundir import RUN_DIR

# Kernel functions the function-probe methods attach to.
FUNCTIONS = ("tcp_check_oom", "__tcp_close", "tcp_close", "tcp_out_of_resources",
             "inet_twsk_alloc", "tcp_enter_memory_pressure", "tcp_leave_memory_pressure",
             "tcp_send_active_reset",
             # a kfunc (6.2+): the TIME_WAIT inference reads the ehash with
             # plain loads where it exists (bpf/tw_overflow.bpf.h state_cast_btf)
             "bpf_rdonly_cast")
# Data symbols read by address where kallsyms lists them (CONFIG_KALLSYMS_ALL).
DATA_SYMBOLS = ("tcp_orphan_cache", "sysctl_tcp_max_orphans")
# Structs the TIME_WAIT inference casts to (bpf/tw_overflow.bpf.h state_cast_btf):
# their ids come from the kernel's BTF, set in the object's .rodata by the loader.
CAST_TYPES = ("sock_common", "inet_ehash_bucket", "tcp_sock")
DENY_ENV = "TCPOOM_DENY_METHODS"
METHODS = ("fentry", "kprobe", "tp_btf", "raw_tp")
TRACEPOINTS = ("tcp_send_reset", "inet_sock_set_state", "sock_exceed_buf_limit",
               # the socket owner's process-context hooks (bpf/owner.bpf.h)
               "sock_send_length", "sock_recv_length", "tcp_rcv_space_adjust", "tcp_destroy_sock",
               # mem_drop: 3 arguments 5.17-6.10, 4 (rx_sk) from 6.11; tcp_probe
               # names the socket before 6.11
               "kfree_skb", "tcp_probe")
#: the memory drop reasons mem_drop counts (enum skb_drop_reason; numbers differ by release)
DROP_REASONS = ("PROTO_MEM", "TCP_OFO_QUEUE_PRUNE", "SOCKET_BACKLOG")
#: tracepoint -> its tracefs event directory, for kernels without BTF (the bcc engine)
TRACEFS_EVENTS = {"tcp_send_reset": "tcp", "inet_sock_set_state": "sock",
                  "sock_exceed_buf_limit": "sock"}
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclasses.dataclass
class KernelFacts:
    release: str = ""
    machine: str = "x86_64"
    root: bool = False
    btf: bool = False
    #: function name -> present in the kernel's BTF (fentry can name it)
    btf_functions: Dict[str, bool] = dataclasses.field(default_factory=dict)
    #: struct name -> its id in the kernel's BTF (0: absent), for the programs that
    #: cast to it with bpf_rdonly_cast (CAST_TYPES)
    btf_type_ids: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: tracepoint -> number of arguments (from btf_trace_<name>), absent if unknown
    tracepoints: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: numeric SK_RST_REASON_TCP_ABORT_ON_MEMORY, None where the enum lacks it
    rst_reason_abort_on_memory: Optional[int] = None
    #: SKB_DROP_REASON_<name> -> its number in this kernel's BTF, for the names of
    #: DROP_REASONS the enum has (PROTO_MEM and TCP_OFO_QUEUE_PRUNE from 5.19)
    drop_reasons: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: what struct proto's orphan_count points to, from BTF: "percpu_counter" (up to
    #: 5.15.15: the quick read works), "int" (per-CPU unsigned int, 5.15.16+ and
    #: 6.0-6.14: not readable without the symbol), "absent" (6.15+), None: no BTF
    orphan_count: Optional[str] = None
    #: BPF_MAP_TYPE_RINGBUF in the kernel's BTF (5.8+, or a vendor backport);
    #: None where there is no BTF to tell (then judged by the version)
    ringbuf: Optional[bool] = None
    #: errno of a test load of an fentry program; 0 = accepted, None = not tried
    fentry_errno: Optional[int] = None
    #: a kprobe PMU or kprobe_events exists (CONFIG_KPROBES)
    kprobes: bool = False
    #: function symbol -> in /proc/kallsyms (not inlined away; kprobes can attach)
    kallsyms_functions: Dict[str, bool] = dataclasses.field(default_factory=dict)
    #: data symbol -> address (CONFIG_KALLSYMS_ALL), 0 when not listed
    kallsyms_data: Dict[str, int] = dataclasses.field(default_factory=dict)
    kallsyms_read: bool = False
    hz: int = 250
    hz_source: str = "default"
    #: kernel headers for the bcc engine
    headers: bool = False
    #: tracepoint -> listed in tracefs (events/<system>/<name>): known without BTF
    tracefs_events: Dict[str, bool] = dataclasses.field(default_factory=dict)
    #: attach methods the operator ruled out (TCPOOM_DENY_METHODS="fentry,kprobe"):
    #: for a kernel whose fentry or kprobes misbehave, and to test the next tier
    #: on a kernel that has the better one
    denied_methods: List[str] = dataclasses.field(default_factory=list)
    #: the memory controller is mounted as a cgroup v1 hierarchy (socket memory is then
    #: charged to memcg->tcpmem, memory.kmem.tcp.*), not in the unified one
    memcg_v1: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "KernelFacts":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str) -> "KernelFacts":
        with open(path) as f:
            return cls.from_json(json.load(f))

    def version(self) -> tuple:
        """(major, minor) of the release string."""
        parts = []
        for p in self.release.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in p if ch.isdigit())
            parts.append(int(digits or 0))
        while len(parts) < 2:
            parts.append(0)
        return tuple(parts)


_KCONFIG_WANTED = ("CONFIG_HZ=", "CONFIG_KALLSYMS_ALL=")


def _kconfig() -> Dict[str, str]:
    """The kernel config, from /proc/config.gz or /boot/config-$(uname -r)."""
    paths = ["/proc/config.gz", f"/boot/config-{os.uname().release}"]
    for p in paths:
        try:
            import gzip         # only when the facts are not cached
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rt") as f:
                out = {}
                for line in f:
                    if line.startswith(_KCONFIG_WANTED):
                        k, v = line.rstrip("\n").split("=", 1)
                        out[k] = v
                        if len(out) == len(_KCONFIG_WANTED):
                            break
                out["_found"] = p
                return out
        except OSError:
            continue
    return {}


def _estimate_hz() -> Optional[int]:
    """HZ from /proc/timer_list (jiffies against nanoseconds), where no config is found."""
    def sample():
        jiffies = now = None
        with open("/proc/timer_list") as f:
            for line in f:
                if line.startswith("now at ") and now is None:
                    now = int(line.split()[2])
                elif line.strip().startswith("jiffies:") and jiffies is None:
                    jiffies = int(line.split()[1])
                if jiffies is not None and now is not None:
                    break
        return jiffies, now
    try:
        j1, n1 = sample()
        time.sleep(0.2)
        j2, n2 = sample()
        rate = (j2 - j1) * 1e9 / (n2 - n1)
        return min((100, 250, 300, 1000), key=lambda hz: abs(hz - rate))
    except (OSError, TypeError, ValueError, ZeroDivisionError):
        return None


def _read_kallsyms(wanted_funcs, wanted_data) -> tuple:
    funcs = dict.fromkeys(wanted_funcs, False)
    data = dict.fromkeys(wanted_data, 0)
    with open("/proc/kallsyms", "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            name = parts[2].decode()
            if name in funcs and parts[1] in (b"T", b"t"):
                funcs[name] = True
            elif name in data:
                data[name] = int(parts[0], 16)
    return funcs, data


def _memcg_v1(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Is the memory controller a v1 hierarchy (mount type cgroup with option memory)?"""
    try:
        with open(mountinfo) as f:
            for line in f:
                _, _, right = line.partition(" - ")
                parts = right.split()
                if len(parts) >= 3 and parts[0] == "cgroup" and "memory" in parts[2].split(","):
                    return True
    except OSError:
        pass
    return False


def gather(test_load: bool = True) -> KernelFacts:
    """Read this kernel's facts. Loads one test program (never attaches) unless
    `test_load` is False (doctor: no BPF) or the per-boot cache has the answer;
    without it fentry_errno stays None ("not tried") and nothing is cached."""
    u = os.uname()
    f = KernelFacts(release=u.release, machine=u.machine, root=os.geteuid() == 0)
    f.denied_methods = [m for m in os.environ.get(DENY_ENV, "").replace(",", " ").split()
                        if m in METHODS]
    f.btf = os.path.exists("/sys/kernel/btf/vmlinux")
    f.headers = os.path.isdir(f"/lib/modules/{u.release}/build/include")
    root = next((r for r in TRACEFS_ROOTS if os.path.isdir(os.path.join(r, "events"))), None)
    if root:
        f.tracefs_events = {tp: os.path.isdir(os.path.join(root, "events", system, tp))
                            for tp, system in TRACEFS_EVENTS.items()}
    f.memcg_v1 = _memcg_v1()
    f.kprobes = (os.path.exists("/sys/bus/event_source/devices/kprobe/type")
                 or os.path.exists("/sys/kernel/tracing/kprobe_events")
                 or os.path.exists("/sys/kernel/debug/tracing/kprobe_events"))
    cached = _load_cached(f) if f.root else None
    if cached is not None:
        for name in _BOOT_STABLE:
            setattr(f, name, cached[name])
        return f
    _gather_boot_stable(f, test_load)
    if f.root and test_load:
        _save_cached(f)
    return f


def _gather_boot_stable(f: KernelFacts, test_load: bool = True) -> None:
    """The facts that stay true until the next boot: BTF lookups, the fentry
    test load, kallsyms, HZ (together 50-100 ms, kallsyms alone ~50 ms)."""
    config = _kconfig()
    if config.get("CONFIG_HZ", "").isdigit():
        f.hz, f.hz_source = int(config["CONFIG_HZ"]), "kconfig"
    fentry_target = 0
    if f.btf:
        with btf_mod.Btf.vmlinux() as btf:
            for fn in FUNCTIONS:
                f.btf_functions[fn] = btf.find(fn, btf_mod.BTF_KIND_FUNC)
            for name in CAST_TYPES:
                f.btf_type_ids[name] = btf.find(name, btf_mod.BTF_KIND_STRUCT)
            for tp in TRACEPOINTS:
                n = btf.func_param_count(f"btf_trace_{tp}")
                if n is not None:
                    f.tracepoints[tp] = n
            f.rst_reason_abort_on_memory = btf.enum_value(
                "sk_rst_reason", "SK_RST_REASON_TCP_ABORT_ON_MEMORY")
            f.ringbuf = btf.enum_value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF") is not None
            for name in DROP_REASONS:
                v = btf.enum_value("skb_drop_reason", f"SKB_DROP_REASON_{name}")
                if v is not None:
                    f.drop_reasons[name] = v
            fentry_target = f.btf_functions["tcp_check_oom"]
            pointee = btf.member_pointee("proto", "orphan_count")
            f.orphan_count = ("absent" if pointee is None else
                              "percpu_counter" if pointee == ("struct", "percpu_counter") else
                              "int" if pointee[0] == "int" else "other")
    f.btf_functions = {k: bool(v) for k, v in f.btf_functions.items()}
    if f.btf and f.root and fentry_target and test_load:
        f.fentry_errno = libbpf.try_load_fentry(fentry_target)
    # /proc/kallsyms costs ~50 ms to generate: read it only when something
    # could use it (kprobes need the function symbols, the data symbols need
    # CONFIG_KALLSYMS_ALL, and addresses read as 0 without root).
    kallsyms_all = config.get("CONFIG_KALLSYMS_ALL") == "y" or not config
    if f.root and (f.kprobes or kallsyms_all):
        f.kallsyms_functions, f.kallsyms_data = _read_kallsyms(FUNCTIONS, DATA_SYMBOLS)
        f.kallsyms_read = True
    if f.hz_source == "default":
        hz = _estimate_hz()
        if hz:
            f.hz, f.hz_source = hz, "timer_list"


# ------------------------------------------------------------------ per-boot cache
# The boot-stable facts are kept in /run (a tmpfs: gone at reboot) keyed by the
# boot id, so a tracer started on a host in trouble skips the BTF and kallsyms
# reads after the first run. TCPOOM_NO_FACTS_CACHE=1 turns it off.
CACHE_DIR = RUN_DIR
_BOOT_STABLE = ("btf_functions", "btf_type_ids", "tracepoints", "rst_reason_abort_on_memory", "orphan_count", "ringbuf",
                "drop_reasons",
                "fentry_errno",
                "kallsyms_functions", "kallsyms_data", "kallsyms_read", "hz", "hz_source")
# 3: orphan_count (issue 13) and ringbuf (issue 13, TIME_WAIT) both kept
# 4, 5: kfree_skb's and tcp_probe's arity, drop_reasons (issue 13, mem_drop)
# 6: btf_functions has bpf_rdonly_cast (issue 17, the TIME_WAIT inference's cost)
# 7: btf_type_ids (the same)
_CACHE_FORMAT = 7


def _cache_key(f: KernelFacts) -> Optional[dict]:
    try:
        with open("/proc/sys/kernel/random/boot_id") as b:
            boot_id = b.read().strip()
    except OSError:
        return None
    # what was looked up is part of the key: another tcpoom version may look up more
    return {"format": _CACHE_FORMAT, "boot_id": boot_id, "release": f.release, "version": os.uname().version,
            "btf": f.btf, "kprobes": f.kprobes, "wanted": [FUNCTIONS, DATA_SYMBOLS, TRACEPOINTS]}


def _cache_path(key: dict) -> str:
    return os.path.join(CACHE_DIR, f"facts-{key['boot_id']}.json")


def _load_cached(f: KernelFacts) -> Optional[dict]:
    if os.environ.get("TCPOOM_NO_FACTS_CACHE") == "1":
        return None
    key = _cache_key(f)
    if key is None:
        return None
    try:
        with open(_cache_path(key)) as c:
            data = json.load(c)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)) \
            or not all(name in data.get("facts", {}) for name in _BOOT_STABLE):
        return None
    return data["facts"]


def _save_cached(f: KernelFacts) -> None:
    if os.environ.get("TCPOOM_NO_FACTS_CACHE") == "1":
        return
    key = _cache_key(f)
    if key is None:
        return
    path = _cache_path(key)
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as c:
            json.dump({"key": key, "facts": {name: getattr(f, name) for name in _BOOT_STABLE}}, c)
        os.replace(tmp, path)
    except OSError:
        pass            # a read-only /run only costs the next start-up its lookups
