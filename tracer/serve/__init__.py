"""`tcpoom serve`: the capture left running, for fleets.

- headroom.py: the /proc figures read at scrape time (TCP memory against
  tcp_mem, orphans against the shift-penalised limit, TIME_WAIT per netns);
- netns_counts.py: per-netns event counts from the ring, bounded labels;
- collector.py: the Prometheus collector, everything read at scrape time;
- webconfig.py, http.py: the endpoint, loopback by default, TLS and basic auth;
- flight.py, triggers.py: the last minutes on disk and the incidents cut from them;
- daemon.py: ties them together around a Capture (or /proc alone).
"""
