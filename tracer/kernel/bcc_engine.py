"""The bcc engine: for kernels without BTF that have their headers installed.

bcc compiles bpf/tcpoom_bcc.c at start against /lib/modules/$(uname -r)/build
(seconds on a real host) and this module attaches the programs the plan chose.
The programs write the same struct tcpoom_event into a BPF ring buffer and
count into the same per-CPU counters as the CO-RE object, so a BccSession is
used exactly like loader.Session: plan, ringbuf, counters(), close().

bcc's Python module comes with Debian's python3-bpfcc, installed for
/usr/bin/python3. It is plain Python over libbcc.so (ctypes), so another
Python 3 runs it too: it is looked for there when not importable as is.
"""
from __future__ import annotations

import os
import time
import sys
import tempfile
from typing import Dict, List, Optional

from . import demotion, libbpf, maps, misses, objects
from tracer.errors import KernelUnsupported, LoadError, UsageError
from tracer.model.events import EVENT_SIZE, STRIDE
from .facts import KernelFacts
from .loader import DEFAULT_RINGBUF, Filters
from .plan import BCC_ATTACH, Plan
from .ringbuf import WAKEUP_FILL_DIVISOR, RingBuffer

#: the C text and every header it includes (verdict.h, tcpoom.h): bpf/ in a
#: source checkout, copied next to the CO-RE objects when an installed form is
#: built (objects.py: written out to a directory when run from a zipapp)
SOURCE_DIR = objects.bcc_directory()
SOURCE = os.path.join(SOURCE_DIR, "tcpoom_bcc.c")
#: where Debian's and Ubuntu's python3-bpfcc put the module
DIST_PACKAGES = ("/usr/lib/python3/dist-packages", "/usr/lib/python3/site-packages")
PAGE = 4096


def import_bcc():
    """bcc's BPF class, or LoadError saying how to get it."""
    try:
        from bcc import BPF
        return BPF
    except ImportError:
        pass
    for d in DIST_PACKAGES:
        if not os.path.isdir(os.path.join(d, "bcc")):
            continue
        # only for this import: the package keeps its own __path__ afterwards
        sys.path.append(d)
        try:
            from bcc import BPF
            return BPF
        except (ImportError, OSError) as e:
            raise LoadError(f"the bcc engine: bcc's Python module in {d} did not load: {e}") from None
        finally:
            sys.path.remove(d)
    raise LoadError("the bcc engine needs bcc: apt-get install python3-bpfcc (or use --engine co-re)")


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no compiler output"


def wakeup_every(ringbuf_bytes: int, cpus: int) -> int:
    """Records a CPU writes between two forced wakeups (bpf/tcpoom_bcc.c):
    a quarter of the ring shared among the CPUs, so a burst spread over all
    of them still wakes the consumer by the time the ring is a quarter full."""
    return max(1, ringbuf_bytes // WAKEUP_FILL_DIVISOR // STRIDE // cpus)


class BccSession:
    """The compiled program, its attachments, ring buffer and counters."""

    def __init__(self, plan: Plan, filters: Filters, ringbuf_bytes: int = DEFAULT_RINGBUF):
        if plan.engine not in ("bcc", "none"):
            raise ValueError(f"a {plan.engine} plan for the bcc engine")
        self.plan = plan
        self.filters = filters
        self.ringbuf: Optional[RingBuffer] = None
        self.misses: Optional[misses.Misses] = None
        self.compile_seconds = 0.0
        self._ringbuf_bytes = ringbuf_bytes
        self._bpf = None
        self.programs: List[str] = [
            p for fam, fp in plan.families.items() if filters.wants(fam) for p in fp.programs]
        unknown = [p for p in self.programs if p not in BCC_ATTACH]
        if unknown:
            raise LoadError(f"the bcc engine has no program {unknown[0]}")

    def cflags(self) -> List[str]:
        c = self.plan.config
        defines = {
            "FILTER_NETNS": self.filters.netns, "FILTER_PID": self.filters.pid,
            "FILTER_PORT": self.filters.port, "RINGBUF_PAGES": self._ringbuf_bytes // PAGE,
            "WAKEUP_EVERY": wakeup_every(self._ringbuf_bytes, os.cpu_count() or 1),
            "TCPOOM_EVENT_SIZE": EVENT_SIZE,
            "ORPHAN_CACHE_ADDR": f"{c.get('orphan_cache_addr', 0):#x}ULL",
            "MAX_ORPHANS_ADDR": f"{c.get('max_orphans_addr', 0):#x}ULL",
        }
        return [f"-I{SOURCE_DIR}", "-w"] + [f"-D{k}={v}" for k, v in defines.items()]

    # ------------------------------------------------------------ start
    def start(self) -> "BccSession":
        try:
            self._compile()
            self._attach()
        except BaseException:
            self.close()
            raise
        return self

    def _compile(self) -> None:
        BPF = import_bcc()
        if self._ringbuf_bytes % PAGE or self._ringbuf_bytes & (self._ringbuf_bytes - 1):
            raise UsageError("the ring buffer size must be a power of two of at least 4096 bytes")
        with open(SOURCE) as f:
            text = f.read()
        # clang's diagnostics go to fd 2 from C++: caught, and the first error
        # made the message
        started = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as log:
            saved = os.dup(2)
            sys.stderr.flush()
            os.dup2(log.fileno(), 2)
            try:
                self._bpf = BPF(text=text, cflags=self.cflags())
                failure = None
            except Exception as e:      # bcc raises plain Exception
                failure = e
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            output = log.read()
        self.compile_seconds = time.monotonic() - started
        if failure is not None:
            if "kernel headers" in output or "chdir(" in output:
                raise KernelUnsupported("bcc found no kernel headers for this kernel: install "
                                        f"linux-headers-{os.uname().release}")
            raise LoadError(f"bcc could not compile {os.path.basename(SOURCE)}: {_first_error(output)}")

    def _attach(self) -> None:
        b = self._bpf
        for name in self.programs:
            kind, target = BCC_ATTACH[name]
            try:
                if kind == "kprobe":
                    b.attach_kprobe(event=target, fn_name=name)
                elif kind == "kretprobe":
                    b.attach_kretprobe(event=target, fn_name=name)
                else:
                    b.attach_raw_tracepoint(tp=target, fn_name=name)
            except Exception as e:
                raise ProgramRefused(name, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        self._counters_fd = b["counters"].map_fd
        # bcc keeps each loaded program in b.funcs; its kprobes are perf events
        # attached by ioctl, with no BPF link to ask for a missed count
        attached = []
        for name in self.programs:
            family = next(f for f, fp in self.plan.families.items() if name in fp.programs)
            fn = b.funcs.get(name.encode()) or b.funcs.get(name)
            if fn is not None:
                attached.append((family, self.plan.families[family].method, fn.fd, -1))
        self.misses = misses.Misses(attached, KernelFacts(release=os.uname().release).version(), links=False)
        self._ncpus = libbpf.lib().libbpf_num_possible_cpus()
        self.ringbuf = RingBuffer(b["events"].map_fd, self._ringbuf_bytes)

    # ------------------------------------------------------------ read
    def counters(self) -> List[int]:
        """The per-CPU counter slots, summed over CPUs."""
        return maps.counters(self._counters_fd, self._ncpus)

    # ------------------------------------------------------------ stop
    def close(self) -> None:
        if self.ringbuf:
            self.ringbuf.close()
            self.ringbuf = None
        if self._bpf is not None:
            self._bpf.cleanup()     # detaches every probe, closes the maps
            self._bpf = None

    def __enter__(self) -> "BccSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProgramRefused(demotion.ProgramRefused):
    def __init__(self, program: str, detail: str):
        super().__init__(f"bcc could not attach {program} ({' '.join(BCC_ATTACH[program])}): {detail}",
                         program, detail)


def start(facts: KernelFacts, plan: Plan, filters: Filters,
          ringbuf_bytes: int = DEFAULT_RINGBUF, synthetic_pid: int = 0) -> BccSession:
    """Compile and attach. A program that will not attach demotes its family to
    counters only (the bcc plan has one method per family); each retry
    compiles again."""
    if synthetic_pid:
        raise UsageError("the synthetic benchmark source is in the CO-RE object only: use --engine co-re")
    return demotion.start_demoting(lambda p: BccSession(p, filters, ringbuf_bytes).start(), plan, facts,
                                   len(plan.families) + 1)


def compile_only(plan: Plan, filters: Optional[Filters] = None) -> Dict[str, float]:
    """Compile without attaching (tests, timing): {"seconds": ...}."""
    s = BccSession(plan, filters or Filters())
    try:
        s._compile()
        return {"seconds": s.compile_seconds}
    finally:
        s.close()

