"""Stay attached and serve Prometheus metrics: the in-kernel counts (orphan
kills, TIME_WAIT overflows, refusals, pressure, losses) beside the kernel's
TcpExt counters, headroom gauges read from /proc at each scrape, and
self-metrics. On loopback by default; TLS and basic auth from --web-config
(the exporters' format). A flight recorder keeps the last minutes on disk and
freezes them into incident-<host>-<time>.tcpoom, with markdown and HTML
reports, when a trigger fires (pressure, the first orphan kill, TIME_WAIT
overflow or refusal, low headroom, SIGUSR1, POST /-/trigger). If BPF cannot
load, /proc figures are still served (tcpoom_bpf_up 0). docs/metrics.md lists
every metric.

\b
Examples:
  tcpoom serve                          # 127.0.0.1:9979/metrics, flight recorder in /var/lib/tcpoom
  tcpoom serve --listen :9979 --web-config /etc/tcpoom/web.yml
  tcpoom serve --no-flight-recorder --netns lab
  tcpoom serve --state-dir /var/tmp/tcpoom --before 600 --trigger orphan_kill"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import click

from tracer.errors import TcpoomError
from tracer.kernel.loader import RINGBUF_DEFAULTS
from .options import capture_options, filters_from

TRIGGERS = ("pressure", "orphan_kill", "tw_overflow", "refusal", "headroom", "sigusr1", "http")


def _size(text: str) -> int:
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a size like 512K, 100M or 2G")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])


@click.command(help=__doc__, short_help='Serve Prometheus metrics; keep a flight recorder.')
@click.option("--listen", default="127.0.0.1:9979", show_default=True, metavar="ADDR:PORT",
              help="Where to serve /metrics (:PORT for every address).")
@click.option("--web-config", type=click.Path(dir_okay=False), help="TLS and basic auth, as Prometheus exporters take it.")
@click.option("--max-netns", type=click.IntRange(min=1), default=32, show_default=True,
              help="Network namespaces with their own series; events of later ones go to netns=\"other\".")
@click.option("--max-cgroups", type=click.IntRange(min=1), default=32, show_default=True,
              help="Cgroups with their own event series (events of later ones go to cgroup=\"other\"), "
                   "and cgroups shown by socket memory besides those.")
@click.option("--no-bpf", is_flag=True, help="Serve the /proc figures only, without loading BPF.")
@click.option("--state-dir", default=lambda: os.environ.get("STATE_DIRECTORY", "/var/lib/tcpoom"),
              show_default="$STATE_DIRECTORY or /var/lib/tcpoom",
              help="The flight recorder's ring and incidents live here.")
@click.option("--no-flight-recorder", is_flag=True, help="Metrics only: nothing written to disk.")
@click.option("--before", "before_s", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds kept before a trigger.")
@click.option("--after", "after_s", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds recorded after a trigger.")
@click.option("--ring-size", default="256M", show_default=True, help="Bytes the ring may take on disk.")
@click.option("--keep-incidents", type=click.IntRange(min=1), default=20, show_default=True,
              help="Incident files kept (oldest removed first).")
@click.option("--incidents-size", default="1G", show_default=True, help="Bytes all incidents and reports may take.")
@click.option("--trigger", "triggers", multiple=True, type=click.Choice(TRIGGERS),
              help="Only these triggers (repeatable; default all).")
@click.option("--headroom", type=click.FloatRange(min=0, max=1), default=0.1, show_default=True,
              help="The headroom trigger fires with less than this fraction of a limit left in "
                   "the once-a-second /proc figures, or at a refusal past tcp_mem[2] between two.")
@click.option("--no-reports", is_flag=True, help="Write incident files without their reports.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), hidden=True)
@click.option("--segment-seconds", type=click.FloatRange(min=1), default=30, hidden=True)
@capture_options(ringbuf_default=RINGBUF_DEFAULTS["record"])
def serve(listen: str, web_config: Optional[str], max_netns: int, max_cgroups: int, no_bpf: bool, state_dir: str,
          no_flight_recorder: bool, before_s: float, after_s: float, ring_size: str, keep_incidents: int,
          incidents_size: str, triggers: Tuple[str, ...], headroom: float, no_reports: bool,
          duration: Optional[float], segment_seconds: float, netns: Optional[str], pid: Optional[int],
          cgroup_path: Optional[str], container: Optional[str], port: Optional[int], families: Tuple[str, ...], ringbuf_size: int, engine: str,
          synthetic_pid: int) -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise TcpoomError("serve needs the prometheus_client module (Debian: python3-prometheus-client; "
                          "pip: tcpoom[serve])") from None
    if cgroup_path is not None or container is not None:
        # serve keeps every cgroup apart as a label (tcpoom_cgroup_events_total);
        # a filter here would drop events from the flight recorder while the
        # in-kernel counts stay the namespace's: select in PromQL instead
        raise click.UsageError("--cgroup/--container: serve exports every cgroup as a label "
                               "(tcpoom_cgroup_events_total{cgroup,container}); select one in PromQL")
    from tracer.serve import daemon, http, webconfig
    from tracer.serve.flight import FlightOptions
    try:
        ring_bytes, incident_bytes = _size(ring_size), _size(incidents_size)
    except click.BadParameter as e:
        raise click.UsageError(e.message)
    http.parse_listen(listen)
    web = webconfig.load(web_config) if web_config else webconfig.WebConfig()
    filters = filters_from(netns, pid, port, families, ringbuf_size, cgroup_path, container)
    flight = None if no_flight_recorder else FlightOptions(
        directory=state_dir, before_s=before_s, after_s=after_s, segment_s=min(segment_seconds, before_s),
        ring_bytes=ring_bytes, keep_incidents=keep_incidents, incident_bytes=incident_bytes,
        triggers=triggers or TRIGGERS, headroom=headroom, reports=not no_reports)
    daemon.serve(daemon.ServeOptions(listen=listen, web=web, filters=filters, ringbuf_size=ringbuf_size,
                                     engine=engine, max_netns=max_netns, max_cgroups=max_cgroups, no_bpf=no_bpf,
                                     duration=duration, flight=flight, synthetic_pid=synthetic_pid))
