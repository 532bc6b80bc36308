"""What tcpoom costs a busy host: loopback connections per second with and
without `tcpoom trace` attached.

    python3 -m scripts.bench_churn [--runs 5] [--seconds 3] [--clients 1]
                                   [--close normal|reset] [--command trace|serve]
                                   [--workload churn|requests] [--stats-runs 5] [--json FILE]

The workload runs in a private network namespace (deleted afterwards): one
process accepts and closes, --clients processes connect and close as fast as
they can, so every connection passes through the state changes tcpoom's
inet_sock_set_state programs examine. `--close normal` (the default): the
client closes first with a FIN and goes to TIME_WAIT, the server reads the end
of stream (one recv) and closes: ten state changes a connection, the client's
close through the TIME_WAIT overflow inference. `--close reset`: the client
closes with a reset (SO_LINGER 0), through tcp_send_reset where the oom_check
program looks, and no TIME_WAIT. Runs
alternate without/with (ABBA order, so drift cancels); medians are compared.
The tracer watches every namespace, all families, as an operator would run it.
Each process is pinned to a core (server on the first, clients on the next):
unpinned, the scheduler's placement made runs vary from 15k to 46k/s.

`--workload requests` measures the other side of an always-on tracer's cost:
no connection is made or closed during the run, each client sends 100 bytes
on its one established connection and waits for the echo, as fast as it can.
No state changes: what runs is what runs at every send and receive (the owner
tracking's sock_send_length/sock_recv_length programs, 6.3+). The figures are
then per round trip (two sends and two receives), not per connection.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 7070
REQUEST_BYTES = 100
_LINGER_0 = struct.pack("ii", 1, 0)


# ------------------------------------------------------------ the workload (in the namespace)

def _pin(cpu: int) -> None:
    # one process a core, always the same: the scheduler's placement was the
    # largest noise between runs (15k to 46k connections/s unpinned)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _listener(ready, backlog: int) -> socket.socket:
    """The server's listening socket, on the first core; `ready` set once it listens."""
    _pin(0)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", PORT))
    ls.listen(backlog)
    ready.set()
    return ls


def _server(ready, normal: bool) -> None:
    ls = _listener(ready, 4096)
    while True:
        c, _ = ls.accept()
        if normal:
            try:
                c.recv(1)       # the client's FIN: it closes first, the server second
            except OSError:
                pass
        c.close()


def _echo_server(ready, clients: int) -> None:
    ls = _listener(ready, 64)
    conns = [ls.accept()[0] for _ in range(clients)]
    import selectors
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            data = key.fileobj.recv(4096)
            if not data:
                return
            key.fileobj.sendall(data)


def _requester(seconds: float, out, cpu: int) -> None:
    _pin(cpu)
    s = socket.create_connection(("127.0.0.1", PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = b"x" * REQUEST_BYTES
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(message)
        got = 0
        while got < REQUEST_BYTES:
            got += len(s.recv(4096))
        done += 1
    s.close()
    out.put((done, 0))


def _client(seconds: float, out, cpu: int, normal: bool) -> None:
    _pin(cpu)
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket()
        # reset: as a load balancer's health checks and many clients do, no
        # TIME_WAIT. normal: a FIN, TIME_WAIT on the client (tcp_tw_reuse lets
        # its ports be reused a second later)
        if not normal:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        try:
            s.connect(("127.0.0.1", PORT))
            done += 1
        except OSError:
            errors += 1
        s.close()
    out.put((done, errors))


def load(seconds: float, clients: int, close: str) -> None:
    """Inside the namespace (these sysctls are the namespace's own): print
    connections/s (round trips/s for "requests") and errors."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write("1024 65535")
    with open("/proc/sys/net/ipv4/tcp_tw_reuse", "w") as f:
        f.write("1")
    # no TIME_WAIT overflow (real events) whatever the rate: the benchmark
    # measures the cost of a connection that raises none
    with open("/proc/sys/net/ipv4/tcp_max_tw_buckets", "w") as f:
        f.write(str(1 << 20))
    ready, out = multiprocessing.Event(), multiprocessing.Queue()
    if close == "requests":
        server = multiprocessing.Process(target=_echo_server, args=(ready, clients), daemon=True)
        procs = [multiprocessing.Process(target=_requester, args=(seconds, out, 1 + i))
                 for i in range(clients)]
    else:
        normal = close == "normal"
        server = multiprocessing.Process(target=_server, args=(ready, normal), daemon=True)
        procs = [multiprocessing.Process(target=_client, args=(seconds, out, 1 + i, normal))
                 for i in range(clients)]
    server.start()
    ready.wait(5)
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    server.terminate()
    print(sum(r[0] for r in results) / seconds, sum(r[1] for r in results))


# ------------------------------------------------------------ the benchmark

def churn(netns_name: str, seconds: float, clients: int, close: str = "normal") -> float:
    r = subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-m", "scripts.bench_churn",
                        "--load", str(seconds), "--clients", str(clients),
                        *(["--workload", "requests"] if close == "requests" else ["--close", close])],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    rate, errors = r.stdout.split()
    if int(errors):
        print(f"  ({errors} failed connects)", file=sys.stderr)
    return float(rate)


#: the attached command: `tcpoom trace`, or `tcpoom serve` (its flight recorder
#: on, in a state directory of its own) with metrics on a loopback port
COMMANDS = {"trace": (["trace"], "tcpoom: tracing"),
            "serve": (["serve", "--listen", "127.0.0.1:19979"], "serving ")}


def start_tracer(command: str = "trace", state_dir: Optional[str] = None) -> subprocess.Popen:
    args, ready = COMMANDS[command]
    if command == "serve":
        args = args + ["--state-dir", state_dir]
    p = subprocess.Popen([sys.executable, "-m", "tracer", *args], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        line = p.stderr.readline()
        if ready in line:
            return p
        if not line:
            raise RuntimeError(f"tcpoom {command} did not start")


def prog_ids() -> set:
    """Ids of every BPF program loaded now: what our tracer added is the difference
    (other tracers on a shared host load programs of the same names)."""
    import json
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout)}


def bpf_run_stats(ids: set) -> dict:
    """{name: (run_time_ns, run_cnt)} of the given programs, from the kernel's
    own BPF statistics (kernel.bpf_stats_enabled), via bpftool."""
    import json
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    names: dict = {}
    for p in json.loads(out.stdout):
        if p["id"] in ids:
            t, c = names.get(p.get("name", "?"), (0, 0))
            names[p.get("name", "?")] = (t + p.get("run_time_ns", 0), c + p.get("run_cnt", 0))
    return names


def bpf_run_time(per_program: bool = False, ids: Optional[set] = None) -> tuple:
    """(run_time_ns, run_count) summed over the given programs (or every loaded
    program of tcpoom's names); with per_program, a third item: {name: run_time_ns}."""
    import json
    if ids is None:
        out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                             check=True)
        ids = {p["id"] for p in json.loads(out.stdout) if p.get("name", "").endswith(_OURS)
               or p.get("name", "").startswith(_OURS_PREFIX)}
    stats = bpf_run_stats(ids)
    total = sum(t for t, _ in stats.values()), sum(c for _, c in stats.values())
    if per_program:
        return total + ({k: t for k, (t, _) in stats.items()},)
    return total


# the suffixes of tcpoom's program names (bpf/tcpoom.bpf.c)
_OURS = ("_btf", "_raw", "_fentry", "_fexit", "_kprobe", "_kretprobe")
_OURS_PREFIX = ("owner_",)     # bpftool shows 15 characters of a name ("owner_rcvspace_")
_STATS = "/proc/sys/kernel/bpf_stats_enabled"


class StatsFloor:
    """What bpf_stats itself adds to every run it measures: an empty raw_tp
    program (r0 = 0; exit) attached beside tcpoom's to inet_sock_set_state (or,
    for the requests workload, which changes no state, sock_send_length). Its
    run_time_ns per run is the measurement's own cost inside the measured span
    (the clock reads and the dispatch), present in each of tcpoom's runs too.
    Loaded with the bpf() system call directly: no object, no compiler."""

    _SYS_BPF = 321              # x86_64
    _PROG_LOAD, _OBJ_GET_INFO, _RAW_TP_OPEN = 5, 15, 17
    _RAW_TRACEPOINT = 17        # BPF_PROG_TYPE_RAW_TRACEPOINT

    def __init__(self, tracepoint: str = "inet_sock_set_state") -> None:
        import ctypes
        self.tracepoint = tracepoint
        self._ct = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.prog_fd = self.link_fd = -1
        self.prog_id = None

    def _bpf(self, cmd: int, attr) -> int:
        ct = self._ct
        r = self._libc.syscall(ct.c_long(self._SYS_BPF), ct.c_long(cmd), ct.byref(attr),
                               ct.c_long(ct.sizeof(attr)))
        if r < 0:
            raise OSError(ct.get_errno(), "bpf()")
        return r

    def __enter__(self) -> "StatsFloor":
        ct = self._ct
        insns = (ct.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)  # mov r0, 0; exit
        lic = ct.create_string_buffer(b"GPL")

        class Load(ct.Structure):
            _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                        ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                        ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32),
                        ("prog_flags", ct.c_uint32), ("prog_name", ct.c_char * 16),
                        ("_rest", ct.c_uint8 * 64)]

        class Open(ct.Structure):
            _fields_ = [("name", ct.c_uint64), ("prog_fd", ct.c_uint32), ("_pad", ct.c_uint32),
                        ("cookie", ct.c_uint64)]

        a = Load(prog_type=self._RAW_TRACEPOINT, insn_cnt=2, insns=ct.addressof(insns),
                 license=ct.addressof(lic), prog_name=b"stats_floor")
        self.prog_fd = self._bpf(self._PROG_LOAD, a)
        tp = ct.create_string_buffer(self.tracepoint.encode())
        self.link_fd = self._bpf(self._RAW_TP_OPEN, Open(name=ct.addressof(tp), prog_fd=self.prog_fd))
        info = (ct.c_uint32 * 2)()                     # bpf_prog_info: type, id

        class Info(ct.Structure):
            _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]

        self._bpf(self._OBJ_GET_INFO, Info(bpf_fd=self.prog_fd, info_len=8, info=ct.addressof(info)))
        self.prog_id = info[1]
        return self

    def __exit__(self, *exc) -> None:
        for fd in (self.link_fd, self.prog_fd):
            if fd >= 0:
                os.close(fd)


def measure(runs: int, seconds: float, clients: int, close: str = "normal",
            command: str = "trace", stats_runs: int = 5) -> dict:
    sys.path.insert(0, ROOT)
    from tracer.host import netns
    without, with_, ns_per_conn, per_prog, floors, net = [], [], [], [], [], []
    with open(_STATS) as f:
        stats_before = f.read().strip()
    try:
        # serve's flight recorder writes here (trace ignores it)
        with netns.temporary("tcpoom-bench-") as name, \
                tempfile.TemporaryDirectory(prefix="tcpoom-churn-serve-") as state_dir:
            churn(name, 1.0, clients, close)           # warm up
            for i in range(runs):
                for traced in ((False, True) if i % 2 == 0 else (True, False)):
                    if traced:
                        tracer = start_tracer(command, state_dir)
                        time.sleep(0.3)
                        with_.append(churn(name, seconds, clients, close))
                        tracer.send_signal(signal.SIGINT)
                        tracer.communicate(timeout=30)
                    else:
                        without.append(churn(name, seconds, clients, close))
            # the programs' own time, measured by the kernel in runs of their
            # own: the statistics cost two clock reads a program run, which
            # would weigh on the throughput above (and are counted in this)
            for _ in range(stats_runs):
                before = prog_ids()
                tracer = start_tracer(command, state_dir)
                ours = prog_ids() - before
                time.sleep(0.3)
                with StatsFloor("sock_send_length" if close == "requests"
                                else "inet_sock_set_state") as floor:
                    with open(_STATS, "w") as f:
                        f.write("1")
                    rate = churn(name, seconds, clients, close)
                    stats = bpf_run_stats(ours | {floor.prog_id})
                    with open(_STATS, "w") as f:
                        f.write(stats_before)
                conns = rate * seconds
                ft, fc = stats.pop("stats_floor", (0, 0))
                floors.append(ft / fc if fc else 0.0)
                ns_per_conn.append(sum(t for t, _ in stats.values()) / conns)
                # net of the statistics' own cost, run by run: the floor is
                # measured in the same run, so a busier moment moves both
                net.append(ns_per_conn[-1] - floors[-1] * sum(c for _, c in stats.values()) / conns)
                per_prog.append({k: (t / conns, c / conns) for k, (t, c) in stats.items()})
                tracer.send_signal(signal.SIGINT)
                tracer.communicate(timeout=30)
    finally:
        with open(_STATS, "w") as f:
            f.write(stats_before)
    # --runs 0: the stats runs alone (an A/B of two builds of the programs)
    a, b = (statistics.median(without), statistics.median(with_)) if runs else (0.0, 0.0)
    ns = statistics.median(ns_per_conn)
    names = sorted({k for d in per_prog for k in d})
    progs = {k: {"ns_per_connection": statistics.median(d.get(k, (0, 0))[0] for d in per_prog),
                 "runs_per_connection": statistics.median(d.get(k, (0, 0))[1] for d in per_prog)}
             for k in names}
    for v in progs.values():
        v["ns_per_run"] = v["ns_per_connection"] / v["runs_per_connection"] if v["runs_per_connection"] else 0
    owner = sum(v["ns_per_connection"] for k, v in progs.items() if k.startswith(_OURS_PREFIX))
    floor_ns = statistics.median(floors)
    runs_total = sum(v["runs_per_connection"] for v in progs.values())
    return {"close": close, "without": a, "with": b, "overhead_pct": (a - b) / a * 100 if a else 0.0,
            "runs_without": without, "runs_with": with_,
            "bpf_ns_per_connection": ns, "bpf_share_pct": ns * a / 1e9 * 100,
            "bpf_ns_per_connection_runs": ns_per_conn,
            "bpf_net_ns_per_connection": statistics.median(net),
            "bpf_net_ns_per_connection_runs": net,
            "bpf_ns_per_connection_without_owner": ns - owner,
            "stats_floor_ns_per_run": floor_ns,
            "program_runs_per_connection": runs_total,
            "stats_floor_ns_per_connection": floor_ns * runs_total,
            "bpf_ns_per_program": progs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5,
                    help="throughput runs without and with tcpoom (0: only the --stats-runs)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--close", choices=("normal", "reset"), default="normal",
                    help="churn: the client closes with a FIN (TIME_WAIT; default) or a reset")
    ap.add_argument("--workload", choices=("churn", "requests"), default="churn",
                    help="churn: connect and close (default); requests: round trips on "
                         "established connections")
    ap.add_argument("--command", choices=sorted(COMMANDS), default="trace",
                    help="what is attached: tcpoom trace (default) or tcpoom serve")
    ap.add_argument("--stats-runs", type=int, default=5,
                    help="runs with kernel.bpf_stats_enabled, for the programs' time (default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the results, with the machine, as JSON")
    ap.add_argument("--load", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.workload == "requests":
        args.close = "requests"     # measure() and load() take the workload in one argument
    if args.load:
        load(args.load, args.clients, args.close)
        return 0
    if args.json:
        from scripts.bench_storm import machine
        before = machine()
    r = measure(args.runs, args.seconds, args.clients, args.close, args.command, args.stats_runs)
    unit = "round trip" if args.close == "requests" else "connection"
    what = "round trips" if args.close == "requests" else f"{args.close} closes"
    if args.runs:
        print(f"{unit}s/s without tcpoom {r['without']:,.0f}, with {r['with']:,.0f}: "
              f"{r['overhead_pct']:+.2f}% fewer (medians of {args.runs})")
    print(f"  tcpoom's BPF programs ({what}): {r['bpf_ns_per_connection']:.0f} ns of kernel "
          f"time per {unit} (kernel.bpf_stats_enabled), {r['bpf_share_pct']:.2f}% of a {unit}'s "
          f"time at this rate; without the owner_* programs {r['bpf_ns_per_connection_without_owner']:.0f} ns")
    print(f"  bpf_stats' own cost: {r['stats_floor_ns_per_run']:.0f} ns a run (an empty program), "
          f"{r['program_runs_per_connection']:.1f} runs a {unit}: "
          f"{r['stats_floor_ns_per_connection']:.0f} ns of the figure above; net of it "
          f"{r['bpf_net_ns_per_connection']:.0f} ns (median of {len(r['bpf_net_ns_per_connection_runs'])} runs: "
          + " ".join(f"{x:.0f}" for x in sorted(r['bpf_net_ns_per_connection_runs'])) + ")")
    print(f"  per program (ns per {unit}, runs per {unit}, ns per run): " +
          ", ".join(f"{k} {v['ns_per_connection']:.0f} ({v['runs_per_connection']:.2f}x "
                    f"{v['ns_per_run']:.0f})" for k, v in r["bpf_ns_per_program"].items()))
    if args.runs:
        print("  without:", " ".join(f"{x:,.0f}" for x in r["runs_without"]))
        print("  with:   ", " ".join(f"{x:,.0f}" for x in r["runs_with"]))
    if args.json:
        import json
        out = {"machine": before, "command": "python3 -m scripts.bench_churn " + " ".join(sys.argv[1:]),
               "attached": args.command, "unit": "round trip" if args.close == "requests" else "connection",
               "owner_tracking": os.environ.get("TCPOOM_NO_OWNER") != "1", "churn": r}
        out["machine"]["load_after"] = round(os.getloadavg()[0], 2)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
