"""Reporters render report models (tracer/analysis/report.py) and nothing else.

Each takes a list of models (one per host, side by side) and returns text.
"""
from __future__ import annotations

from typing import List

FORMATS = ("terminal", "markdown", "json", "html")


def render(fmt: str, models: List[dict], width: int = 100) -> str:
    if fmt == "terminal":
        from .terminal import render as r
        return r(models, width)
    if fmt == "markdown":
        from .markdown import render as r
        return r(models)
    if fmt == "json":
        from .json_out import render as r
        return r(models)
    if fmt == "html":
        from .html import render as r
        return r(models)
    raise ValueError(fmt)
