"""Load and attach the programs a probe plan chose, and read what they produce.

libbpf order: open, set the .rodata config, choose what to autoload, load,
attach, poll, clean up. Every attachment is a BPF link held by a file
descriptor, so a tracer killed with SIGKILL leaves nothing attached.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import struct
from typing import List, Optional, Sequence, Tuple

from . import btf, btfcache, demotion, libbpf, maps, misses, objects
from tracer.errors import LoadError, PermissionNeeded
from .facts import KernelFacts
from .plan import Plan
from .plan.core import SET_STATE_PROGRAMS
from .ringbuf import RingBuffer

OBJECT = objects.path("tcpoom.bpf.o")
#: the synthetic event source of the benchmarks (bpf/bench.bpf.c), loaded only
#: for --synthetic-pid: its events and counters are the production object's
BENCH_OBJECT = objects.path("bench.bpf.o")
#: the maps the bench object shares with the production object
BENCH_SHARED_MAPS = ("events", "counters")
DEFAULT_RINGBUF = 4 << 20
#: programs loaded for user space to run (BPF_PROG_TEST_RUN), never attached
RUN_ONLY = ("tw_settle_run",)
#: each attaching command's default ring buffer: record and live take storms
#: whole; trace is read as it prints
RINGBUF_DEFAULTS = {"trace": DEFAULT_RINGBUF, "record": 16 << 20, "live": 16 << 20}


@dataclasses.dataclass
class Filters:
    netns: int = 0
    pid: int = 0
    port: int = 0
    families: Optional[Sequence[str]] = None   # None: every family
    # matched in user space (tracer/capture/who.py): the kernel side knows ids, not names
    cgroup: Optional[str] = None
    container: Optional[str] = None

    def wants(self, family: str) -> bool:
        return self.families is None or family in self.families


class ProgramRefused(demotion.ProgramRefused):
    def __init__(self, program: str, detail: str):
        super().__init__(f"the kernel refused BPF program {program}: {detail}", program, detail)


class Session:
    """The loaded object: its links, ring buffer and counters."""

    def __init__(self, plan: Plan, filters: Filters, ringbuf_bytes: int = DEFAULT_RINGBUF,
                 object_path: str = OBJECT, synthetic_pid: int = 0, synthetic: str = "ringbuf"):
        self.plan = plan
        self.filters = filters
        self._l = libbpf.lib()
        self._obj = None
        self._bench_obj = None
        self._links: List[int] = []
        self._attached: List[tuple] = []     # (family, method, prog fd, link fd)
        self.misses: Optional[misses.Misses] = None
        self.ringbuf: Optional[RingBuffer] = None
        self._counters_fd = -1
        self._ringbuf_bytes = ringbuf_bytes
        self._path = object_path
        self.programs: List[str] = [
            p for fam, fp in plan.families.items() if filters.wants(fam) for p in fp.programs]
        self._owner_at_set_state = 0
        if self.programs:
            # the socket's owner is noted for the events' sake (bpf/owner.bpf.h)
            self.programs += [p for p in plan.owner.get("programs", []) if p not in self.programs]
            for kind in ("btf", "raw"):
                # one program a state change, not two: the TIME_WAIT inference's
                # notes the owner too (bpf/owner.bpf.h owner_at_set_state)
                if (any(p in self.programs for p in SET_STATE_PROGRAMS[kind])
                        and f"owner_state_{kind}" in self.programs):
                    self.programs.remove(f"owner_state_{kind}")
                    self._owner_at_set_state = 1
        # benchmarks: the synthetic source, driven by getpid() of that process,
        # into the ring buffer, or into a perf buffer for the reference pipeline
        self._synthetic_pid = synthetic_pid
        self.preloaded = False      # loaded by preload.py while the CLI was imported
        self._bench_program = ""
        if synthetic_pid:
            self._bench_program = "bench_sys_enter" if synthetic == "ringbuf" else "bench_perf_sys_enter"

    # ------------------------------------------------------------ start
    def start(self) -> "Session":
        return self.prepare().load_prepared().attach()

    def prepare(self) -> "Session":
        """Open and configure: what comes before the kernel sees anything."""
        try:
            self._custom_btf = self._open(btfcache.cached(self._path))
            self._configure()
        except BaseException:
            self.close()
            raise
        return self

    def load_prepared(self, fallback: bool = True) -> "Session":
        """Load what prepare() set up; `fallback`: on failure, once more
        against the kernel's own BTF if a minimised one was used."""
        try:
            try:
                self._load()
            except LoadError:
                if not (fallback and self._custom_btf):
                    raise
                # a minimised BTF that does not fit after all: drop it and
                # relocate against the kernel's own
                btfcache.forget(self._path)
                self._l.bpf_object__close(self._obj)
                self._obj = None
                self._open(None)
                self._configure()
                self._load()
            if self._bench_program:
                self._load_bench()
        except BaseException:
            self.close()
            raise
        return self

    def attach(self) -> "Session":
        try:
            self._attach()
        except BaseException:
            self.close()
            raise
        return self

    def matches(self, plan: Plan, filters: Filters, ringbuf_bytes: int, synthetic_pid: int) -> bool:
        """Loaded for exactly this plan, filters and ring buffer (a preloaded session)."""
        return (self.plan == plan and self.filters == filters and synthetic_pid == self._synthetic_pid
                and ringbuf_bytes == self._ringbuf_bytes)

    def _open(self, custom_btf: Optional[str]) -> bool:
        if not os.path.exists(self._path):
            raise LoadError(f"BPF object {self._path} missing: run scripts/build-bpf")
        libbpf.clear_log()
        opts = None
        if custom_btf:
            self._opts = libbpf.ObjectOpenOpts(sz=ctypes.sizeof(libbpf.ObjectOpenOpts),
                                               btf_custom_path=custom_btf.encode())
            opts = ctypes.cast(ctypes.pointer(self._opts), ctypes.c_void_p)
        self._obj = self._l.bpf_object__open_file(self._path.encode(), opts)
        if not self._obj:
            raise LoadError(f"libbpf could not open {self._path}: "
                            f"{os.strerror(libbpf.last_errno())}")
        return bool(custom_btf)

    def _configure(self) -> None:
        l = self._l
        values = dict(self.plan.config)
        values.update(filter_netns=self.filters.netns, filter_pid=self.filters.pid,
                      filter_port=self.filters.port, owner_at_set_state=self._owner_at_set_state)
        _set_rodata(self._obj, values)
        for m in libbpf.iter_maps(self._obj):
            if l.bpf_map__name(m).decode() == "events":
                l.bpf_map__set_max_entries(m, self._ringbuf_bytes)
        _autoload(self._obj, set(self.programs))

    def _load_bench(self) -> None:
        """The synthetic source's own object, after the production one: it
        writes into the production ring buffer and counters (their fds reused),
        so the pipeline reads its records as it reads real ones."""
        l = self._l
        if not os.path.exists(BENCH_OBJECT):
            raise LoadError(f"BPF object {BENCH_OBJECT} missing: run scripts/build-bpf")
        libbpf.clear_log()
        self._bench_obj = l.bpf_object__open_file(BENCH_OBJECT.encode(), None)
        if not self._bench_obj:
            self._bench_obj = None
            raise LoadError(f"libbpf could not open {BENCH_OBJECT}: {os.strerror(libbpf.last_errno())}")
        _set_rodata(self._bench_obj, {"bench_tgid": self._synthetic_pid})
        for m in libbpf.iter_maps(self._bench_obj):
            name = l.bpf_map__name(m).decode()
            if name in BENCH_SHARED_MAPS and l.bpf_map__reuse_fd(m, self.map_fd(name)) != 0:
                raise LoadError(f"the bench object could not share map {name}: "
                                f"{os.strerror(libbpf.last_errno())}")
        _autoload(self._bench_obj, {self._bench_program})
        if l.bpf_object__load(self._bench_obj) != 0:
            raise LoadError(f"libbpf could not load {BENCH_OBJECT}: {os.strerror(libbpf.last_errno())}: "
                            f"{libbpf.log_tail(1)}")

    def _load(self) -> None:
        if self._l.bpf_object__load(self._obj) == 0:
            return
        err = libbpf.last_errno()
        log = libbpf.log_tail(40)
        if err == 1 and os.geteuid() != 0:
            raise PermissionNeeded("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON): run with sudo")
        m = re.search(r"prog '([^']+)': (?:failed to load|BPF program load failed)", log)
        if m:
            lines = [ln for ln in log.splitlines() if ln.strip() and "prog '" not in ln]
            raise ProgramRefused(m.group(1), (lines[-1] if lines else os.strerror(err)).strip())
        raise LoadError(f"libbpf could not load the BPF object: {os.strerror(err)}: "
                        f"{log.splitlines()[-1] if log else ''}")

    def _attach(self) -> None:
        l = self._l
        for p in libbpf.iter_programs(self._obj):
            name = l.bpf_program__name(p).decode()
            if name not in self.programs or name in RUN_ONLY:
                continue
            link = l.bpf_program__attach(p)
            if not link:
                raise ProgramRefused(name, f"attach failed: {os.strerror(libbpf.last_errno())}")
            self._links.append(link)
            family = next((f for f, fp in self.plan.families.items() if name in fp.programs), None)
            if family:
                self._attached.append((family, self.plan.families[family].method,
                                       l.bpf_program__fd(p), l.bpf_link__fd(link)))
        if self._bench_program:
            self._attach_bench()
        events = l.bpf_object__find_map_by_name(self._obj, b"events")
        counters = l.bpf_object__find_map_by_name(self._obj, b"counters")
        self._counters_fd = l.bpf_map__fd(counters)
        self._ncpus = l.libbpf_num_possible_cpus()
        self.ringbuf = RingBuffer(l.bpf_map__fd(events), self._ringbuf_bytes)
        self.misses = misses.Misses(self._attached, _version())

    def _attach_bench(self) -> None:
        l = self._l
        for p in libbpf.iter_programs(self._bench_obj):
            if l.bpf_program__name(p).decode() != self._bench_program:
                continue
            link = l.bpf_program__attach(p)
            if not link:
                raise LoadError(f"could not attach {self._bench_program}: "
                                f"{os.strerror(libbpf.last_errno())}")
            self._links.append(link)

    def program_fds(self) -> dict:
        """Name -> file descriptor of each attached program (serve reads their
        run time and count from /proc/self/fdinfo)."""
        l = self._l
        if not self._obj:
            return {}
        return {l.bpf_program__name(p).decode(): l.bpf_program__fd(p)
                for p in libbpf.iter_programs(self._obj)
                if l.bpf_program__name(p).decode() in self.programs}

    def map_fd(self, name: str) -> int:
        """A map of the production object, else of the bench object (bench_perf)."""
        l = self._l
        for obj in (self._obj, self._bench_obj):
            m = l.bpf_object__find_map_by_name(obj, name.encode()) if obj else None
            if m:
                return l.bpf_map__fd(m)
        return -1

    # ------------------------------------------------------------ read
    def counters(self) -> List[int]:
        """The per-CPU counter slots, summed over CPUs."""
        return maps.counters(self._counters_fd, self._ncpus)

    def settle_tw_in_kernel(self) -> bool:
        """Have the kernel confirm the TIME_WAIT candidates past their window
        (tw_settle_run, until it finds none); False where it cannot run."""
        if "tw_settle_run" not in self.programs:
            return False
        prog = self._l.bpf_object__find_program_by_name(self._obj, b"tw_settle_run")
        fd = self._l.bpf_program__fd(prog) if prog else -1
        if fd < 0:
            return False
        for _ in range(4096):       # 32 a run: 131072 at most, the fifo holds 4096
            ret = libbpf.test_run(fd)
            if ret is None:
                return False
            if ret == 0:
                break
        return True

    def settle_tw(self, window_s: float) -> Tuple[List[bytes], int]:
        """The tracepoint tier's TIME_WAIT candidates still open: those older than
        `window_s` are confirmed here (taken out of tw_pending, so a late cancel
        in the kernel can no longer count them) and returned as raw records; the
        number of younger ones, left undecided, comes second."""
        if not any(p in self.programs for ps in SET_STATE_PROGRAMS.values() for p in ps):
            return [], 0
        return maps.settle_tw_pending(self.map_fd("tw_pending"), window_s)

    # ------------------------------------------------------------ stop
    def close(self) -> None:
        for link in self._links:
            self._l.bpf_link__destroy(link)
        self._links = []
        if self.ringbuf:
            self.ringbuf.close()
            self.ringbuf = None
        if self._bench_obj:
            self._l.bpf_object__close(self._bench_obj)
            self._bench_obj = None
        if self._obj:
            self._l.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _version() -> tuple:
    return KernelFacts(release=os.uname().release).version()


def _set_rodata(obj: int, values: dict) -> None:
    """Write the .rodata config variables of an opened object (those it has)."""
    l = libbpf.lib()
    # the object's own BTF as libbpf fixed it up at open: the compiler
    # leaves DATASEC offsets at 0 in the file
    layout = btf.Btf(l.bpf_object__btf(obj), owned=False).datasec_vars(".rodata")
    for m in libbpf.iter_maps(obj):
        if not l.bpf_map__name(m).decode().endswith(".rodata"):
            continue
        size = ctypes.c_size_t()
        base = l.bpf_map__initial_value(m, ctypes.byref(size))
        for var, value in values.items():
            if var not in layout:
                continue
            off, width = layout[var]
            fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width]
            ctypes.memmove(base + off, struct.pack(fmt, value), width)


def _autoload(obj: int, wanted: set) -> None:
    l = libbpf.lib()
    for p in libbpf.iter_programs(obj):
        l.bpf_program__set_autoload(p, l.bpf_program__name(p).decode() in wanted)


def start(facts: KernelFacts, plan: Plan, filters: Filters,
          ringbuf_bytes: int = DEFAULT_RINGBUF, synthetic_pid: int = 0,
          early: Optional[Session] = None) -> Session:
    """Start a session; a program the kernel refuses demotes its family to the
    next method of the plan, so the best method that really loads is used.
    `early`: a session loaded ahead (preload.py), taken if it is the one asked
    for and closed otherwise."""
    session = (_preloaded(early, plan, filters, ringbuf_bytes, synthetic_pid)
               or _load(facts, plan, filters, ringbuf_bytes, synthetic_pid))
    btfcache.make_in_background(session._path)     # for the next start
    return session


def _preloaded(early: Optional[Session], plan: Plan, filters: Filters, ringbuf_bytes: int,
               synthetic_pid: int) -> Optional[Session]:
    """The session preload.py loaded, attached, if it is the one asked for."""
    if early is None:
        return None
    if early.matches(plan, filters, ringbuf_bytes, synthetic_pid):
        try:
            return early.attach()
        except ProgramRefused:
            pass        # _load demotes, with the refusal explained
    early.close()
    return None


def _load(facts: KernelFacts, plan: Plan, filters: Filters, ringbuf_bytes: int,
          synthetic_pid: int) -> Session:
    return demotion.start_demoting(
        lambda p: Session(p, filters, ringbuf_bytes, synthetic_pid=synthetic_pid).start(), plan, facts, 12)
