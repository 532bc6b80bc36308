"""Writes deploy/prometheus/tcpoom-alerts.test.yml for `promtool test rules`:
series written for each alert (and quiet ones that must not fire), the
expected annotations rendered from the rules' own templates, so a rule's
text changes here in one place. `--check` fails if the file is stale.

    python3 -m scripts.alert_tests [--check]
"""
from __future__ import annotations

import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy", "prometheus", "tcpoom-alerts.yml")
OUT = os.path.join(ROOT, "deploy", "prometheus", "tcpoom-alerts.test.yml")
BASE = {"instance": "node1:9979", "job": "tcpoom"}


def _series(name, values, **labels):
    lab = ",".join(f'{k}="{v}"' for k, v in sorted(dict(BASE, **labels).items()))
    return {"series": f"{name}{{{lab}}}", "values": values}


#: alert -> (input series, eval time, labels of the alert beyond BASE/severity, $value)
CASES = {
    "TcpoomOrphanKills": ([_series("tcpoom_orphan_kills_total", "0 0 5 10 10 10 10", path="close"),
                           _series("tcpoom_orphan_kills_total", "0x6", path="timer")],
                          "5m", {"job": None}, 10),
    "TcpoomOrphansNearLimit": ([_series("tcpoom_orphan_sockets", "900x10"),
                                _series("tcpoom_orphan_sockets_limit", "1000x10", shift="2"),
                                _series("tcpoom_orphan_sockets_limit", "4000x10", shift="0")],
                               "6m", {}, 0.9),
    "TcpoomTimeWaitOverflow": ([_series("tcpoom_tw_overflows_total", "0 0 295 295 295 295 295")],
                               "5m", {"job": None}, 295),
    "TcpoomTimeWaitNearLimit": ([_series("tcpoom_tw_buckets", "5x10", netns="4026532177"),
                                 _series("tcpoom_tw_buckets_limit", "5x10", netns="4026532177"),
                                 _series("tcpoom_tw_buckets", "10x10", netns="4026531840"),
                                 _series("tcpoom_tw_buckets_limit", "131072x10", netns="4026531840")],
                                "6m", {"netns": "4026532177"}, 1.0),
    "TcpoomTimeWaitLimitPredicted": ([_series("tcpoom_tw_buckets", "0+100x60", netns="4026532177"),
                                      _series("tcpoom_tw_buckets_limit", "9000x60", netns="4026532177")],
                                     "60m", {"netns": "4026532177"}, None),
    "TcpoomTcpMemoryPressure": ([_series("tcpoom_tcp_memory_pressure", "0 1 1 1 1")], "3m", {}, 1),
    "TcpoomTcpMemoryNearLimit": ([_series("tcpoom_tcp_memory_bytes", "950x5"),
                                  _series("tcpoom_tcp_mem_threshold_bytes", "1000x5", threshold="max"),
                                  _series("tcpoom_tcp_mem_threshold_bytes", "500x5", threshold="pressure")],
                                 "2m", {}, 0.95),
    "TcpoomTcpMemoryLimitPredicted": ([_series("tcpoom_tcp_memory_bytes", "0+100x60"),
                                       _series("tcpoom_tcp_mem_threshold_bytes", "9000x60", threshold="max")],
                                      "60m", {}, None),
    "TcpoomMemoryRefusals": ([_series("tcpoom_memory_refusals_total", "0 0 50 50 50 50", side="send"),
                              _series("tcpoom_memory_refusals_total", "0x5", side="recv")],
                             "5m", {"job": None}, 50),
    "TcpoomEventsLost": ([_series("tcpoom_ring_lost_events_total", "0 0 3 3 3 3", family="tw_overflow")],
                         "5m", {"job": None}, 3),
    "TcpoomBpfDown": ([_series("tcpoom_bpf_up", "0x15")], "11m", {}, 0),
    "TcpoomFlightRecorderStopped": ([_series("tcpoom_flight_recorder_up", "0x10")], "6m", {}, 0),
}
#: the same alerts kept quiet: series under each threshold, or not yet long enough
QUIET = {
    "TcpoomOrphanKills": ([_series("tcpoom_orphan_kills_total", "3x6", path="close")], "5m"),
    "TcpoomTimeWaitNearLimit": ([_series("tcpoom_tw_buckets", "4x10", netns="1"),
                                 _series("tcpoom_tw_buckets_limit", "5x10", netns="1")], "6m"),
    "TcpoomTcpMemoryNearLimit": ([_series("tcpoom_tcp_memory_bytes", "950x5"),
                                  _series("tcpoom_tcp_mem_threshold_bytes", "1000x5", threshold="max")], "30s"),
    "TcpoomBpfDown": ([_series("tcpoom_bpf_up", "1x15")], "11m"),
    "TcpoomTcpMemoryLimitPredicted": ([_series("tcpoom_tcp_memory_bytes", "1000x60"),
                                       _series("tcpoom_tcp_mem_threshold_bytes", "9000x60", threshold="max")],
                                      "60m"),
}


def humanize(v: float) -> str:
    # Prometheus's humanize for values from 1 to 1000 and 0: %.4g
    return f"{v:.4g}"


def render(text: str, labels: dict, value) -> str:
    text = re.sub(r"{{ \$labels\.(\w+) }}", lambda m: labels.get(m.group(1), ""), text)
    text = text.replace("{{ $value | humanize }}", humanize(value) if value is not None else "")
    return text.replace("{{ $value | humanizePercentage }}",
                        f"{value * 100:.4g}%" if value is not None else "")


def build() -> dict:
    with open(RULES) as f:
        rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    missing = set(rules) - set(CASES)
    if missing:
        raise SystemExit(f"alert_tests: no series written for {sorted(missing)}")
    tests = []
    for name, (series, at, extra, value) in CASES.items():
        rule = rules[name]
        labels = {k: v for k, v in dict(BASE, **extra).items() if v is not None}
        labels.update(rule.get("labels", {}))
        tests.append({
            "interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": [{
                "exp_labels": labels,
                "exp_annotations": {k: render(v, labels, value) for k, v in rule["annotations"].items()},
            }]}],
        })
    for name, (series, at) in QUIET.items():
        tests.append({"interval": "1m", "input_series": series,
                      "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []}]})
    return {"rule_files": ["tcpoom-alerts.yml"], "evaluation_interval": "1m", "tests": tests}


def text() -> str:
    return ("# Generated by `python3 -m scripts.alert_tests` from tcpoom-alerts.yml: series for\n"
            "# each alert, the annotations rendered from the rules. Run: promtool test rules THIS\n"
            + yaml.safe_dump(build(), sort_keys=False, width=120))


def main(argv) -> int:
    out = text()
    if "--check" in argv:
        with open(OUT) as f:
            if f.read() != out:
                print(f"alert_tests: {OUT} is stale: run python3 -m scripts.alert_tests", file=sys.stderr)
                return 1
        return 0
    with open(OUT, "w") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
