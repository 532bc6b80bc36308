"""`--format html`: one self-contained page with charts, for a browser or a printer.

The package: text.py (escaping, figures for people), svg.py (the charts and gauges),
sections.py and tables.py (what a host shows), page.py (the page, with report.css
and hover.js as package files).

Everything is inline (CSS, SVG, one small script) so the page works offline, from a
ticket attachment or a laptop with no network: no URL in it points anywhere.

Safety (docs/design.md "Safety"): every string of the model came from the kernel or the
traced host (comm names, hostnames, file paths, peers, the findings built from them),
so every one goes through `_e()` (html.escape) before it reaches the page, in text,
in attributes and inside SVG <title>/<text>. The only <script> data is JSON with
`<`, `>` and `&` written as \\u003c escapes, and the script writes with textContent,
never innerHTML. Charts are drawn here as SVG, so the page is complete without the
script; the script only adds a hover read-out.

Size: the model's series are one point per second of recording, so a day-long trace
has 86,400 of them. Each series is folded to at most MAX_POINTS buckets keeping each
bucket's maximum (a one-second spike must survive), and every table is capped.
"""
from __future__ import annotations

from .page import render
from .svg import downsample
from .text import MAX_POINTS, MAX_ROWS

__all__ = ["MAX_POINTS", "MAX_ROWS", "downsample", "render"]
