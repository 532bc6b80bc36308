"""`--format json`: the report models as they are (docs/report-json.md)."""
from __future__ import annotations

import json
from typing import List


def render(models: List[dict]) -> str:
    return json.dumps({"schema": "tcpoom-report/1", "hosts": models}, indent=2) + "\n"
