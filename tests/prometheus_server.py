"""A real Prometheus server (Debian's `prometheus` package) for the serve
tests: started on a loopback port with a temporary config and storage, a 1 s
scrape interval, and stopped (and its files removed with tmp_path) after."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir, targets, rule_files=(), scrape_extra=""):
        self.dir = str(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n")
            if rule_files:
                f.write("rule_files:\n" + "".join(f"  - {r}\n" for r in rule_files))
            f.write("scrape_configs:\n  - job_name: tcpoom\n" + scrape_extra + "    static_configs:\n"
                    f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("prometheus did not start: " + open(self.log.name).read()[-2000:])

    def query(self, expr: str, at: float = None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}",
                                    timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str, at: float = None):
        """The single value of an instant query (None without data)."""
        res = self.query(expr, at)
        if not res:
            return None
        assert len(res) == 1, (expr, res)
        return float(res[0]["value"][1])

    def wait_for(self, expr: str, within: float = 20.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.query(expr):
                return
            time.sleep(0.2)
        raise AssertionError(f"no data for {expr} within {within} s; targets: "
                             + json.dumps(self.targets())[:1500])

    def targets(self):
        with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=5) as r:
            return json.load(r)["data"]["activeTargets"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
