"""Start-up to attached, and memory, of `tcpoom trace` and `record` (medians of N runs).

    python3 -m scripts.bench_startup [--runs 7] [--commands trace,record] [--cold] [--json out.json]

Start-up is measured from exec to the "tcpoom: tracing" ("recording") line on
stderr, which is printed once every program is attached. RSS is VmRSS and VmHWM
of the tracer after one second attached, idle.

Warm: the per-boot caches (kernel facts, minimised BTF: tracer/kernel/rundir.py)
are there, as for every start after the first on a boot. --cold also measures
the first start after a boot: each cold start gets an empty run directory of
its own (TCPOOM_RUN_DIR), so nothing the other tcpoom processes on the host
share is removed; the background BTF minimisation a first start leaves behind
is waited for before the next start. The page cache stays warm (dropping it is
host-wide).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out


READY = {"trace": "tcpoom: tracing", "record": "tcpoom: recording"}


def _wait_background(run_dir: str, timeout: float = 60.0) -> None:
    """Until the BTF minimisation a start began there is done (its .tmp file gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(n.endswith(".tmp") for n in os.listdir(run_dir)):
            return
        time.sleep(0.05)


def one_run(no_site: bool = False, no_preload: bool = False, cold: bool = False,
            command: str = "trace") -> tuple:
    """no_site: without the interpreter's site module (python -S, site-packages
    on PYTHONPATH): what start-up costs where no .pth file runs code at every
    interpreter start (this sandbox's imports certifi: ~45 ms).
    no_preload: the object loaded after click, not meanwhile (tracer/kernel/preload.py).
    cold: with an empty run directory, as the first start after a boot."""
    argv, env = [sys.executable, "-m", "tracer", command, "--duration", "30"], dict(os.environ)
    scratch = tempfile.mkdtemp(prefix="tcpoom-startup-")
    if command == "record":
        argv += ["-o", os.path.join(scratch, "startup.tcpoom")]
    if no_site:
        import sysconfig
        argv.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([ROOT, sysconfig.get_paths()["purelib"]])
    if no_preload:
        env["TCPOOM_NO_PRELOAD"] = "1"
    if cold:
        run_dir = os.path.join(scratch, "run")
        os.mkdir(run_dir, 0o700)
        env["TCPOOM_RUN_DIR"] = run_dir
    try:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while True:
            ready, _, _ = select.select([p.stderr], [], [], 10)
            if not ready:
                p.kill()
                raise RuntimeError("tracer did not attach within 10 s")
            line = p.stderr.readline()
            if line.startswith(READY[command]):
                attached = time.monotonic() - t0
                cpu = _cpu_s(p.pid)
                break
            if not line:
                raise RuntimeError("tracer exited before attaching")
        time.sleep(1.0)
        mem = _status(p.pid)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=20)
        if cold:
            _wait_background(run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return attached, mem["VmRSS"], mem["VmHWM"], cpu


def _cpu_s(pid: int) -> float:
    """utime + stime of the process (every thread) so far: on a busy machine the
    wall time to attached waits for a core, the CPU time much less so."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def summary(runs: list) -> dict:
    ms = [r[0] * 1000 for r in runs]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1), "runs_ms": [round(m, 1) for m in ms],
            "rss_mb": round(statistics.median(r[1] for r in runs), 1),
            "hwm_mb": round(statistics.median(r[2] for r in runs), 1),
            "cpu_median_ms": round(statistics.median(r[3] for r in runs) * 1000, 1)}


def measure(commands: list, runs: int, cold: bool) -> dict:
    """Warm (and cold) starts of each command, interleaved so the machine's
    drift falls on every variant alike; `python3 -c pass` alongside."""
    for command in commands:         # the caches a warm start expects
        one_run(command=command)
    got = {(c, k): [] for c in commands for k in (("warm", "cold") if cold else ("warm",))}
    bare = []
    for _ in range(runs):
        for (command, kind), rs in got.items():
            rs.append(one_run(command=command, cold=kind == "cold"))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.monotonic() - t0)
    out = {f"{command}_{kind}": summary(rs) for (command, kind), rs in got.items()}
    out["python_bare_ms"] = round(statistics.median(bare) * 1000, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--commands", default="trace", help="trace, record or both (comma-separated)")
    ap.add_argument("--cold", action="store_true", help="also the first start after a boot")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_startup: needs root (it loads BPF programs)", file=sys.stderr)
        return 77
    # an installed package has its bytecode compiled (pip does it)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "tracer")], check=True)
    from scripts.bench_storm import machine
    res = {"machine": machine(), "runs": args.runs,
           "results": measure(args.commands.split(","), args.runs, args.cold)}
    res["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    for name, r in res["results"].items():
        if isinstance(r, dict):
            print(f"{name:13} start-up to attached: median {r['median_ms']:.0f} ms (min {r['min_ms']:.0f}, "
                  f"max {r['max_ms']:.0f}) over {args.runs} runs, CPU {r['cpu_median_ms']:.0f} ms; RSS idle {r['rss_mb']:.1f} MB, "
                  f"peak {r['hwm_mb']:.1f} MB")
    print(f"`python3 -c pass`: median {res['results']['python_bare_ms']:.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
