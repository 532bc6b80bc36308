"""docs/performance.md's result tables, made from the raw results kept under docs/bench/.

    python3 -m scripts.bench_doc --check    # exit 1 when a table in the page is not what its JSON gives
    python3 -m scripts.bench_doc --write    # rewrite those tables from the JSON

A generated table sits in the page between

    <!-- bench_doc: NAME -->
    ...
    <!-- /bench_doc -->

and TABLES says which JSON file under docs/bench/ it is made from and how
(a table over several files names them, glob patterns allowed, and its
provenance line lists every distinct date, commit and note of them).
Every JSON file a table reads must say what it was measured on (MACHINE_KEYS
in its "machine" section). To put another benchmark's figures under the
check, add a function that makes its rows from its JSON, an entry in TABLES
and the markers in the page; `--write` fills it in. Exit codes: 0 the page
matches, 1 it does not (one line per table, then the differing lines), 2 a
file is missing or unreadable.
"""
from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import re
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "performance.md")
BENCH_DIR = os.path.join(ROOT, "docs", "bench")
# what a result file must say about where and when it was measured
MACHINE_KEYS = ("date", "kernel", "cpus", "cpu", "python", "tcpoom", "commit")
BEGIN = re.compile(r"^<!-- bench_doc: ([\w-]+) -->$")
END = "<!-- /bench_doc -->"

Row = Tuple[str, ...]


class DocError(Exception):
    """A file missing or unreadable (exit 2)."""


# ------------------------------------------------------------------ helpers

def _best(sweep: dict) -> Tuple[float, int]:
    """(highest rate achieved with zero loss, the rate offered then)."""
    rows = [r for r in sweep["rows"] if r["zero_loss"]]
    if not rows:
        return 0.0, 0
    r = max(rows, key=lambda r: r["achieved"])
    return r["achieved"], r["rate"]


def _lossy(sweep: dict) -> str:
    """The first rate offered that lost events, as a clause, or ''."""
    for r in sweep["rows"]:
        if not r["zero_loss"]:
            offered = r["received"] + r["lost"]
            if not r["lost"]:
                return f"; offered {r['rate']:,}/s: some of the runs lost events"
            return f"; offered {r['rate']:,}/s: {r['lost'] / max(offered, 1) * 100:.1f}% lost (median)"
    return ""


def _rate(sweep: dict) -> str:
    achieved, offered = _best(sweep)
    return f"**{achieved:,.0f} events/s** (offered {offered:,}/s){_lossy(sweep)}"


def _cpu_range(sweep: dict) -> str:
    values = [r["cpu_s_per_m"] for r in sweep["rows"]]
    return f"{min(values):.2f}-{max(values):.2f} s"


def _report(rep: dict, key: str) -> str:
    r = rep[key]
    return f"{r['seconds']:.2f} s ({r['events']:,} events), peak RSS {r['peak_rss_mb']:.0f} MB"


# ------------------------------------------------------------------ tables

def results(b: dict) -> List[Row]:
    """scripts/bench over the constant synthetic records."""
    rec, live, ref = b["record"], b["live"], b["reference"]
    (rec_best, _), (ref_best, _) = _best(rec), _best(ref)
    cpu_rec = min(r["cpu_s_per_m"] for r in rec["rows"])
    cpu_ref = min(r["cpu_s_per_m"] for r in ref["rows"])
    rss = [r["rss_mb"] for r in rec["rows"]]
    churn = b["churn"]
    rep = b["report"]
    return [
        ("`record`, highest rate achieved with zero loss", _rate(rec), "≥ 2,000,000"),
        ("`live`, highest rate achieved with zero loss", _rate(live), "≥ 1,000,000"),
        ("reference bcc-style pipeline, same run", _rate(ref), ""),
        ("`record` against the reference",
         f"**{rec_best / max(ref_best, 1):.1f}x** the rate, {cpu_ref / cpu_rec:.0f}x less CPU per event", "≥ 8x"),
        ("CPU per million events, `record` (over the rates offered)", _cpu_range(rec), ""),
        ("CPU per million events, reference", _cpu_range(ref), ""),
        ("RSS while recording (VmHWM, over the rates offered)",
         f"**{min(rss):.0f} MB**" if round(min(rss)) == round(max(rss)) else f"**{min(rss):.0f}-{max(rss):.0f} MB**",
         "< 40 MB"),
        ("RSS of `record` through a 10-million-event storm (2 M/s offered)",
         f"**{rep['10m']['recorder_rss_mb']:.0f} MB**", ""),
        ("loopback connection churn, with `tcpoom trace` attached",
         f"**{churn['overhead_pct']:.1f}% fewer** connections/s ({churn['without']:,.0f} → {churn['with']:,.0f}, "
         f"medians of {len(churn['runs_without'])}); the programs {churn['bpf_ns_per_connection']:.0f} ns "
         f"a connection", "< 1%"),
        ("`report` over 1,000,000 events", _report(rep, "1m"), ""),
        ("`report` over 10,000,000 events", "**" + _report(rep, "10m").replace(" s (", " s** (", 1), "< 10 s"),
        ("bytes per event on disk", f"{rep['10m']['bytes_per_event']:.0f} raw; "
         f"{rep['compressed_bytes_per_event']:.1f} with `--compress` (synthetic, so a floor)", ""),
    ]


def _with_reports(files: Files) -> dict:
    """bench.json with its report figures taken from report.json, a later
    run of `scripts/bench --only report,report-varied`."""
    b = dict(files["bench.json"])
    b.update({k: v for k, v in files["report.json"].items() if k in ("report", "report_varied")})
    return b


def results_and_reports(files: Files) -> List[Row]:
    return results(_with_reports(files))


def varied_and_reports(files: Files) -> List[Row]:
    """The rates from rates.json, a later run of `scripts/bench --only
    record,live,record-varied,live-varied` on a quiet machine."""
    b = _with_reports(files)
    b.update({k: v for k, v in files["rates.json"].items() if k in RATES_KEYS})
    return varied(b)


#: what rates.json replaces in the varied table
RATES_KEYS = ("record", "live", "record_varied", "live_varied")


def varied(b: dict) -> List[Row]:
    """The same commands over constant and over varied records."""
    rc, rv = b["report"], b["report_varied"]
    return [
        ("`record`, highest rate achieved with zero loss", _rate(b["record"]), _rate(b["record_varied"]),
         "≥ 2,000,000"),
        ("CPU per million events, `record`", _cpu_range(b["record"]), _cpu_range(b["record_varied"]), ""),
        ("`live`, highest rate achieved with zero loss", _rate(b["live"]), _rate(b["live_varied"]), "≥ 1,000,000"),
        ("CPU per million events, `live`", _cpu_range(b["live"]), _cpu_range(b["live_varied"]), ""),
        ("`report` over 1,000,000 events", _report(rc, "1m"), _report(rv, "1m"), ""),
        ("`report` over 10,000,000 events", _report(rc, "10m"), _report(rv, "10m"), "< 10 s"),
        ("RSS of `record` through the 10-million-event recording (VmHWM)",
         f"{rc['10m']['recorder_rss_mb']:.0f} MB", f"{rv['10m']['recorder_rss_mb']:.0f} MB", ""),
    ]


def serve(s: dict) -> List[Row]:
    """scripts/bench_serve (issue 15)."""
    idle, idle100 = s["idle"], s["idle_sampling_every_100ms"]
    host, ns32 = s["scrape_host_only"], s["scrape"]
    earlier = [r for r in s["scrape_earlier_runs"] if r["netns_read"] == ns32["netns_read"]]
    med32 = sorted(r["median_ms"] for r in [ns32] + earlier)
    p95_32 = sorted(r["p95_ms"] for r in [ns32] + earlier)
    host_earlier = [r for r in s["scrape_earlier_runs"] if r["netns_read"] == 1]
    storm, long = s["storm"], s["storm_30min"]
    return [
        ("idle CPU over 10 minutes (BPF attached, flight recorder writing its ring, a scrape every 15 s)",
         f"**{idle['cpu_percent_of_core']:.2f}% of a core** ({idle['cpu_s']:.2f} s in {idle['seconds']:.0f} s)",
         "< 0.5%"),
        ("idle RSS over the same 10 minutes", f"**{idle['rss_mb_start']:.1f} → {idle['rss_mb_end']:.1f} MB**",
         "< 50 MB"),
        ("the same, /proc sampled every 100 ms as `trace` does",
         f"{idle100['cpu_percent_of_core']:.2f}% of a core", ""),
        (f"scrape, serve's namespace only ({host['series']} series)",
         f"median **{host['median_ms']:.1f} ms**, p95 {host['p95_ms']:.0f} ms"
         + "".join(f" (an earlier run: median {r['median_ms']:.1f} ms, p95 {r['p95_ms']:.0f} ms)"
                   for r in host_earlier), ""),
        (f"scrape reading {ns32['netns_read']} namespaces (the `--max-netns` cap, {ns32['series']} series)",
         f"median **{ns32['median_ms']:.0f} ms** ({med32[0]:.0f}-{med32[-1]:.0f} ms over {len(med32)} runs), "
         f"p95 {p95_32[0]:.0f}-{p95_32[-1]:.0f} ms", ""),
    ] + _scrape_cgroups(s) + [
        _long_storm(long, "no growth over 30 minutes"),
    ] + ([_long_storm(s["storm_30min_before_malloc_fix"], "", "the same before serve/malloc.py")]
         if "storm_30min_before_malloc_fix" in s else []) + [
        (f"the same, {storm['seconds'] / 60:.0f} minutes (sampling every {storm.get('sample_period_s', 0.1):g} s)",
         f"{storm['rss_mb_first']:.1f} → {storm['rss_mb_last']:.1f} MB; {storm['cpu_percent_of_core']:.1f}% of a core",
         ""),
    ]


def _long_storm(long: dict, target: str, what: str = "") -> Row:
    """RSS through a long storm. Growth is judged on the second half of the run:
    the first minutes are the allocator's warm-up (buffers reaching their size)."""
    rss = long["rss_mb_samples"]
    half = rss[len(rss) // 2]
    minutes = long["seconds"] / 60
    flat = rss[-1] <= half
    shape = (f"flat at {rss[-1]:.1f} MB over its second half" if flat
             else f"{half:.1f} → {rss[-1]:.1f} MB over its second half")
    when = f" (measured {long['date'][:10]} at {long['commit']})" if "date" in long else ""
    return (what or f"RSS through a {minutes:.0f}-minute storm of {long['rate']:,} events/s "
                    f"({long['offered'] / 1e6:.1f} M events, {long['lost']} lost, flight recorder on){when}",
            f"{long['rss_mb_first']:.1f} → **{long['rss_mb_last']:.1f} MB** (max {long['rss_mb_max']:.1f}), "
            f"{shape}; {long['cpu_percent_of_core']:.1f}% of a core",
            f"{target}: **{'met' if flat else 'not met'}**" if target else "")


def _scrape_cgroups(s: dict) -> List[Row]:
    """The 1000-cgroup scrape (`bench_serve --only cgroups`), where the file has it."""
    if "scrape_cgroups" not in s:
        return []
    c = s["scrape_cgroups"]
    again = "".join(f" (another run: {r['median_ms']:.1f} / {r['p95_ms']:.1f} / {r['max_ms']:.1f} ms)"
                    for r in s.get("scrape_cgroups_earlier_runs", []))
    rows = [(f"scrape with **{c['cgroups']} cgroups** (v1 memory + unified hierarchies), {c['cgroups_with_sockets']} "
             f"holding sockets with refusals ({c['events_in_other']} events in \"other\"; {c['series']} series)",
             f"median **{c['median_ms']:.1f} ms**, p95 {c['p95_ms']:.1f} ms, max {c['max_ms']:.1f} ms" + again,
             f"< 20 ms: **{'met' if c['median_ms'] < 20 else 'not met'}**")]
    if "scrape_cgroups_none" in s:
        n = s["scrape_cgroups_none"]
        rows.append((f"the same with no cgroup made ({n['series']} series)",
                     f"median {n['median_ms']:.1f} ms, p95 {n['p95_ms']:.1f} ms", ""))
    return rows


# ------------------------------------------------------------------ tables over several files

Files = Dict[str, dict]  # file name under docs/bench/ -> its JSON


def _pick(files: Files, pattern: str) -> List[dict]:
    """The files whose name matches pattern, in name order (KeyError when none)."""
    out = [files[n] for n in sorted(files) if fnmatch.fnmatch(n, pattern)]
    if not out:
        raise KeyError(pattern)
    return out


def _spread(values: List[float], fmt: str = "{:.0f}") -> str:
    """'942' or '2132-2509', over the values as printed."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


# bench_storm's command names as the page writes them
STORM_COMMANDS = {"record": "`record`", "trace": "`trace --json`", "live": "`live --no-screen`",
                  "trace-text": "`trace`"}


def _seen(match: Optional[bool]) -> str:
    return {True: "yes", False: "**no**", None: "(no counter)"}[match]


def _at_20k(cpu_us: float, tenths: bool = False) -> str:
    """CPU per event times 20,000 events/s, in % of a core (whole percents from 10% unless tenths)."""
    pct = cpu_us * 20000 / 1e6 * 100
    return f"{pct:.1f}%" if tenths or pct < 10 else f"{pct:.0f}%"


def storms(files: Files) -> List[Row]:
    """scripts/bench_storm before and after the wakeup policy (issue 17)."""
    before, after = files["storm-before.json"], files["storm-after.json"]
    old = {(r["storm"], r["command"]): r for r in before["rows"]}
    rows = []
    for r in after["rows"]:
        b = old.get((r["storm"], r["command"]))
        was = f"{b['cpu_us_per_event']:.1f} µs, {b['core_pct']:.0f}%" if b else "-"
        rows.append((r["storm"], STORM_COMMANDS.get(r["command"], f"`{r['command']}`"), f"{r['events_per_s']:,}",
                     was, f"**{r['cpu_us_per_event']:.1f} µs, {r['core_pct']:.1f}%**",
                     _at_20k(r["cpu_us_per_event"]), str(r["lost"]), _seen(r["counts_match"])))
    return rows


def _runs_of(result: dict, command: str) -> Dict[str, List[dict]]:
    """storm -> the command's row in each run (A, B, ...), for a file of several bench_storm runs."""
    out: Dict[str, List[dict]] = {}
    for run in result["runs"]:
        for r in run["rows"]:
            if r["command"] == command:
                out.setdefault(r["storm"], []).append(r)
    return out


def storms_jsonl(files: Files) -> List[Row]:
    """`trace --json` before and after the per-shape formatter (issue 17 item 1), runs A and B."""
    before = _runs_of(files["storm-jsonl-before.json"], "trace")
    after = _runs_of(files["storm-jsonl-after.json"], "trace")
    rows = []
    for storm, new in after.items():
        old = before.get(storm, [])
        lost = sorted({r["lost"] for r in new})
        seen = sorted({_seen(r["counts_match"]) for r in new})
        rows.append((storm,
                     "; ".join(f"{r['cpu_us_per_event']:.1f}" for r in old) + " µs" if old else "-",
                     "**" + "; ".join(f"{r['cpu_us_per_event']:.1f}" for r in new) + " µs**",
                     "; ".join(_at_20k(r["cpu_us_per_event"], tenths=True) for r in new),
                     "; ".join(str(x) for x in lost), "; ".join(seen)))
    return rows


def storms_quiet(q: dict) -> List[Row]:
    """Every storm and command again on a quiet machine (issue 17 item 1's targets),
    the runs side by side; a refusal storm that made no refusal is left out."""
    by: Dict[tuple, List[dict]] = {}
    for r in q["rows"]:
        if not r.get("no_events"):
            by.setdefault((r["storm"], r["command"]), []).append(r)
    rows = []
    for (storm, command), runs in by.items():
        rows.append((storm, STORM_COMMANDS.get(command, f"`{command}`"),
                     "; ".join(f"{r['events_per_s']:,}" for r in runs),
                     "**" + "; ".join(f"{r['cpu_us_per_event']:.1f}" for r in runs) + " µs**",
                     "; ".join(f"{r['core_pct']:.1f}%" for r in runs),
                     "; ".join(_at_20k(r["cpu_us_per_event"], tenths=True) for r in runs),
                     "; ".join(sorted({str(r["lost"]) for r in runs})),
                     "; ".join(sorted({_seen(r["counts_match"]) for r in runs}))))
    return rows


def startup_cold(s: dict) -> List[Row]:
    """scripts/bench_startup --cold: warm and cold starts interleaved (issue 17 item 2.3)."""
    res = s["results"]
    rows = []
    for command in ("trace", "record"):
        w, c = res[f"{command}_warm"], res[f"{command}_cold"]
        rows.append((f"`{command}`", f"{w['median_ms']:.0f} ms ({w['min_ms']:.0f})",
                     f"**{c['median_ms']:.0f} ms** ({c['min_ms']:.0f})",
                     f"{w['cpu_median_ms']:.0f} → {c['cpu_median_ms']:.0f} ms",
                     f"{w['rss_mb']:.0f} → {c['rss_mb']:.0f} MB"))
    return rows


# the churn files: (row, its files before, its files after)
CHURN_ROWS = (
    ("normal closes, owner tracking on", "churn-normal-before-*.json", "churn-normal-after-*.json"),
    ("normal closes, owner tracking off", "churn-normal-no-owner-before.json", "churn-normal-no-owner-after.json"),
    ("reset closes, owner tracking on", "churn-reset-before.json", "churn-reset-after.json"),
)


def _per_connection(results: List[dict]) -> str:
    """'3314, 3238 (1178, 1239; 23 runs)': the programs' ns a connection, bpf_stats' own, program runs."""
    c = [r["churn"] for r in results]
    runs = _spread([x["program_runs_per_connection"] for x in c])
    return (", ".join(f"{x['bpf_ns_per_connection']:.0f}" for x in c) + " ("
            + ", ".join(f"{x['stats_floor_ns_per_connection']:.0f}" for x in c) + f"; {runs} runs)")


def churn(files: Files) -> List[Row]:
    """scripts/bench_churn with bpf_stats, before and after (issue 17 item 2.4)."""
    rows = []
    for what, before, after in CHURN_ROWS:
        new = _per_connection(_pick(files, after))
        rows.append((what, _per_connection(_pick(files, before)), "**" + new.replace(" (", "** (", 1)))
    return rows


def _net(c: dict) -> float:
    """The programs' ns a connection net of bpf_stats' own cost: the median of
    the runs' own differences where the file has them (bench_churn since issue
    17's last item), else the medians' difference."""
    if "bpf_net_ns_per_connection" in c:
        return c["bpf_net_ns_per_connection"]
    return c["bpf_ns_per_connection"] - c["stats_floor_ns_per_connection"]


def _net_runs(c: dict) -> str:
    runs = c.get("bpf_net_ns_per_connection_runs")
    return f"{min(runs):.0f}-{max(runs):.0f} in {len(runs)} runs" if runs else "one figure"


def churn_attached(files: Files) -> List[Row]:
    """scripts/bench_churn --command trace|serve on a quiet machine: the same
    programs under either command (issue 17 item 2.4's "serve on top")."""
    rows = []
    for name in sorted(files):
        d = files[name]
        c = d["churn"]
        owner = "" if d.get("owner_tracking", True) else ", owner tracking off (`TCPOOM_NO_OWNER=1`)"
        rows.append((f"`{d.get('attached', 'trace')}`{owner}", f"**{_net(c):.0f} ns** ({_net_runs(c)})",
                     f"{c['bpf_ns_per_connection']:.0f} ns ({c['stats_floor_ns_per_connection']:.0f})",
                     f"{c['bpf_ns_per_connection_without_owner']:.0f} ns",
                     f"{c['program_runs_per_connection']:.0f}",
                     f"{c['without']:,.0f} → {c['with']:,.0f} ({c['overhead_pct']:.1f}% fewer; "
                     f"medians of {len(c['runs_with'])})"))
    return rows


def requests(files: Files) -> List[Row]:
    """scripts/bench_churn --workload requests: what runs at every send and receive
    of an established connection (owner tracking), per round trip."""
    rows = []
    for name in sorted(files):
        d = files[name]
        c = d["churn"]
        progs = ", ".join(f"`{k}` {v['ns_per_run']:.0f} ns × {v['runs_per_connection']:.0f}"
                          for k, v in sorted(c["bpf_ns_per_program"].items()) if v["runs_per_connection"] >= 0.5)
        rows.append((f"`{d.get('attached', 'trace')}`",
                     f"**{_net(c):.0f} ns** ({_net_runs(c)})",
                     f"{c['bpf_ns_per_connection']:.0f} ns ({c['stats_floor_ns_per_connection']:.0f})",
                     progs or "none",
                     f"{c['without']:,.0f} → {c['with']:,.0f} ({c['overhead_pct']:.1f}% fewer; "
                     f"medians of {len(c['runs_with'])})"))
    return rows


def twin(files: Files) -> List[Row]:
    """Before and after the TIME_WAIT twin's plain loads (state_cast_btf),
    owner tracking off, alternated on one machine (issue 17 item 2.4)."""
    rows = []
    for when in ("before", "after"):
        picked = _pick(files, f"twin-{when}-*.json")
        c = [d["churn"] for d in picked]
        state = {k: v for d in c for k, v in d["bpf_ns_per_program"].items() if "state" in k}
        name = sorted(state)[0]
        net = [x for d in c for x in d["bpf_net_ns_per_connection_runs"]]
        rows.append((f"{when} ({', '.join(sorted({d['machine']['commit'] for d in picked}))}): `{name}`",
                     f"**{statistics.median(net):.0f} ns** ({min(net):.0f}-{max(net):.0f} in {len(net)} runs)",
                     ", ".join(f"{d['bpf_ns_per_connection']:.0f} ({d['stats_floor_ns_per_connection']:.0f})"
                               for d in c),
                     ", ".join(f"{d['bpf_ns_per_program'][name]['ns_per_run']:.0f}" for d in c),
                     ", ".join(f"{d['bpf_ns_per_program']['tw_destroy_btf']['ns_per_run']:.0f}" for d in c)))
    return rows


def _churn_header(files: Files) -> Row:
    commits = sorted({d["machine"]["commit"] for name in files for d in [files[name]] if "-before" in name})
    return ("ns per connection (of which bpf_stats' own)", f"before ({', '.join(commits)})", "after")


def targets(files: Files) -> List[Row]:
    """The issue 17 rows of the targets: cold start-up and the programs' time per connection."""
    res = files["startup.json"]["results"]
    tc, rc, tw, rw = (res[k] for k in ("trace_cold", "record_cold", "trace_warm", "record_warm"))
    attached = _pick(files, "churn-attached-*.json")
    off = [d["churn"] for d in attached if not d.get("owner_tracking", True)]
    on = [d["churn"] for d in attached if d.get("owner_tracking", True)]
    return [
        ("start-up, first start after a boot (no per-boot caches; issue 17)",
         f"`trace` **{tc['median_ms']:.0f} ms**, `record` {rc['median_ms']:.0f} ms, medians of "
         f"{files['startup.json']['runs']} at load {files['startup.json']['machine']['load_before']}: "
         f"see \"Cold start\" below", "< 300 ms"),
        ("start-up, warm (per-boot caches in place), the same run",
         f"`trace` **{tw['median_ms']:.0f} ms**, `record` {rw['median_ms']:.0f} ms", "< 150 ms"),
        ("BPF kernel time per connection, normal closes (bpf_stats, net of its own cost; "
         "as counted, with that cost, in brackets)",
         f"**{_spread([_net(c) for c in off])} ns** with owner tracking off (`TCPOOM_NO_OWNER=1`) "
         f"({_spread([c['bpf_ns_per_connection'] for c in off])}); with it on (`trace`, `serve`) "
         f"{_spread([_net(c) for c in on])} ns ({_spread([c['bpf_ns_per_connection'] for c in on])}), "
         f"on a quiet machine; see below", "≤ 300 ns"),
    ]


# name -> (JSON file under docs/bench/, its rows, the table's header). A table
# made from several files names them in a tuple (a name may be a glob
# pattern); its function then gets {file name: JSON}, and its header may be a
# function of the same.
TABLES: Dict[str, Tuple[Union[str, Tuple[str, ...]], Callable[[Any], List[Row]], Union[Row, Callable[[Any], Row]]]] = {
    "results": (("bench.json", "report.json"), results_and_reports, ("figure", "measured", "target")),
    "targets-17": (("startup.json", "churn-attached-*.json"), targets, ("figure", "measured", "target")),
    "varied": (("bench.json", "report.json", "rates.json"), varied_and_reports,
               ("figure", "constant records", "varied records", "target (varied)")),
    "serve": ("serve.json", serve, ("figure", "measured", "target")),
    "storms": (("storm-before.json", "storm-after.json"), storms,
               ("storm", "command", "events/s", "before: CPU per event, % of a core",
                "after: CPU per event, % of a core", "at 20,000/s", "lost", "seen = kernel")),
    "storms-jsonl": (("storm-jsonl-before.json", "storm-jsonl-after.json"), storms_jsonl,
                     ("storm", "`trace --json` before (A; B): CPU per event", "after (A; B): CPU per event",
                      "after, at 20,000/s", "lost", "seen = kernel")),
    "storms-quiet": ("storm-quiet.json", storms_quiet,
                     ("storm", "command", "events/s (A; B)", "CPU per event", "% of a core", "at 20,000/s",
                      "lost", "seen = kernel")),
    "startup-cold": ("startup.json", startup_cold,
                     ("command", "warm: median (min)", "cold: median (min)", "CPU to attached, warm → cold",
                      "RSS idle, warm → cold")),
    "churn": (("churn-*.json",), churn, _churn_header),
    "twin": (("twin-*.json",), twin,
             ("program (owner tracking off)", "ns per connection, net of bpf_stats' own cost",
              "as counted (of which bpf_stats' own), per file", "its ns a run", "`tw_destroy_btf` ns a run")),
    "requests": (("requests-*.json",), requests,
                 ("attached", "ns per round trip, net of bpf_stats' own cost",
                  "as counted (of which bpf_stats' own)", "programs: as counted a run × runs a round trip",
                  "round trips/s without → with")),
    "churn-attached": (("churn-attached-*.json",), churn_attached,
                       ("attached", "ns per connection, net of bpf_stats' own cost",
                        "as counted (of which bpf_stats' own)", "without owner_* programs",
                        "program runs a connection", "connections/s without → with")),
}


# ------------------------------------------------------------------ the page

def load(name: str, bench_dir: str = BENCH_DIR) -> dict:
    path = os.path.join(bench_dir, name)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DocError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    machine = data.get("machine") if isinstance(data, dict) else None
    if not isinstance(machine, dict):
        # serve.json keeps its machine facts at the top level
        machine = data if isinstance(data, dict) else {}
    missing = [k for k in MACHINE_KEYS if k not in machine]
    if missing:
        raise DocError(f"{path}: no {', '.join(missing)} in its machine section: "
                       f"a result must say where and when it was measured")
    return data


def _names(spec: Union[str, Tuple[str, ...]], bench_dir: str) -> List[str]:
    """The files a table reads: its names, glob patterns expanded in name order."""
    if isinstance(spec, str):
        return [spec]
    out = []
    for entry in spec:
        if not any(ch in entry for ch in "*?["):
            out.append(entry)
            continue
        try:
            found = sorted(n for n in os.listdir(bench_dir) if fnmatch.fnmatch(n, entry))
        except OSError as e:
            raise DocError(f"{bench_dir}: {e.strerror}") from None
        if not found:
            raise DocError(f"{os.path.join(bench_dir, entry)}: no such file")
        out += found
    return out


def label(spec: Union[str, Tuple[str, ...]]) -> str:
    """How the page names a table's files."""
    entries = [spec] if isinstance(spec, str) else list(spec)
    return _and([f"`docs/bench/{e}`" for e in entries])


def _and(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _distinct(values: List[Any]) -> List[str]:
    out: List[str] = []
    for v in values:
        if str(v) not in out:
            out.append(str(v))
    return out


def provenance(spec: Union[str, Tuple[str, ...]], machines: List[dict]) -> str:
    """The line under a table: which files, measured when, where and on what."""
    def one(key: str) -> str:
        return ", ".join(_distinct([m[key] for m in machines]))
    commits = _distinct([m["commit"] for m in sorted(machines, key=lambda m: m["date"])])  # oldest first
    libbpf = _distinct([m["libbpf"] for m in machines if m.get("libbpf")])
    notes = _distinct([m["note"] for m in machines if m.get("note")])
    return (f"From {label(spec)}: {', '.join(_distinct([m['date'][:10] for m in machines]))}, "
            f"commit{'s' if len(commits) > 1 else ''} {_and(commits)}, kernel {one('kernel')}, "
            f"{one('cpus')} CPUs ({one('cpu')}), Python {one('python')}"
            + (f", libbpf {', '.join(libbpf)}" if libbpf else "")
            + "".join(f"; {n}" for n in notes) + ".")


def table(name: str, bench_dir: str = BENCH_DIR) -> List[str]:
    """The markdown lines of table `name`, from its JSON."""
    spec, rows_of, header = TABLES[name]
    names = _names(spec, bench_dir)
    files = {n: load(n, bench_dir) for n in names}
    arg = files[spec] if isinstance(spec, str) else files
    try:
        rows = rows_of(arg)
        if callable(header):
            header = header(arg)
    except (KeyError, IndexError, TypeError, ZeroDivisionError) as e:
        raise DocError(f"{os.path.join(bench_dir, _and(names))}: no figure for table {name}: "
                       f"{type(e).__name__} {e}") from None
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append(provenance(spec, [d.get("machine", d) for d in files.values()]))
    return lines


def blocks(lines: List[str]) -> List[Tuple[str, int, int]]:
    """(name, first line, end marker line) of every generated table in the page."""
    out, open_at = [], None
    for i, line in enumerate(lines):
        m = BEGIN.match(line.strip())
        if m:
            open_at = (m.group(1), i)
        elif line.strip() == END and open_at:
            out.append((open_at[0], open_at[1] + 1, i))
            open_at = None
    return out


def check(page: str = PAGE, bench_dir: str = BENCH_DIR, write: bool = False) -> List[str]:
    """What differs (empty: the page matches); with write, the page is rewritten instead."""
    try:
        with open(page) as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise DocError(f"{page}: {e.strerror}") from None
    found = blocks(lines)
    problems = [f"{page}: no generated table {name!r} (markers <!-- bench_doc: {name} --> ... {END})"
                for name in TABLES if name not in {n for n, _, _ in found}]
    for name, first, end in reversed(found):
        if name not in TABLES:
            problems.append(f"{page}: line {first}: unknown generated table {name!r}")
            continue
        want = table(name, bench_dir)
        have = lines[first:end]
        if have != want:
            if write:
                lines[first:end] = want
                continue
            problems.append(f"{page}: table {name!r} (line {first + 1}) differs from {label(TABLES[name][0])}:")
            problems += ["    " + d for d in difflib.unified_diff(have, want, "page", "json", n=0, lineterm="")
                         if not d.startswith(("---", "+++", "@@"))]
    if write:
        with open(page, "w") as f:
            f.write("\n".join(lines))
        return [p for p in problems if "no generated table" in p or "unknown" in p]
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when the page differs from the JSON")
    mode.add_argument("--write", action="store_true", help="rewrite the page's tables from the JSON")
    ap.add_argument("--page", default=PAGE)
    ap.add_argument("--bench-dir", default=BENCH_DIR)
    args = ap.parse_args(argv)
    try:
        problems = check(args.page, args.bench_dir, write=args.write)
    except DocError as e:
        print(f"bench_doc: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
