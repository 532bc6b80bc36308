"""Start `tcpoom serve` as a child process for the tests and scrape it."""
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Optional

from conftest import ROOT


class Serve:
    def __init__(self, port: int, *args, ready: str = "tcpoom: serving", preexec_fn=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.proc = subprocess.Popen([sys.executable, "-m", "tracer", "serve", "--listen", f"127.0.0.1:{port}", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)
        self.lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.lines.append(line)
            if line.startswith(ready):
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError("serve did not start: " + "".join(self.lines) + self.proc.communicate()[1])

    def read_line(self, timeout: float) -> Optional[str]:
        """The next line serve writes to stderr ("" at its end), or None if none came
        within `timeout` seconds: a blocking readline would hang the suite when serve
        stays quiet (an incident that never triggers). A line that comes later is
        read by the thread left waiting, and lost; serve's exit ends that thread."""
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stderr.readline()), daemon=True)
        t.start()
        t.join(max(timeout, 0.0))
        if not box:
            return None
        self.lines.append(box[0])
        return box[0]

    def scrape(self, headers=None) -> str:
        req = urllib.request.Request(self.url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def stop(self, sig=None):
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        self.lines.append(err)
        return self.proc.returncode, "".join(self.lines)


def sample(text: str, name: str, **labels):
    """The value of one series in a scrape (None if absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        got = dict(p.split("=", 1) for p in lab.rstrip("}").split(",") if p) if lab else {}
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == str(v) for k, v in labels.items()):
            return float(value)
    return None
