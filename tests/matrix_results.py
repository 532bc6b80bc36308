"""What the kernel tests verified, as JSON lines in a results file, from which
scripts/kernel_matrix.py builds docs/kernel-matrix.md.

A kernel test records, once it has checked what the tracer reported (through
the `matrix` fixture of conftest.py, which fills in the test's id):

    matrix.check(plan, "oom_check", "orphans_close: count = TcpExt TCPAbortOnMemory",
                 fields=["verdict"], used=row["method"], figures=f"{seen}/{delta}")

- `plan`: the probe plan the tracer reported: the "plan" of `tcpoom probes
  --json`, a guest's plan, or the plan stored in a recording (plan_of_report).
  Its kernel, engine, the family's method and the fidelity it claims for every
  field go into the record.
- `checked`: what the test checked, in words that do not change from run to
  run (they go into the doc); the run's numbers go in `figures` (results file
  only).
- `fields`: the plan's fields whose values the test checked.
- `used`: the method the tracer says it used ("fentry tcp_check_oom" from a
  totals row, or "fentry" from an event); it must be the plan's.
- `method`, `fidelity`: for a variant the plan does not describe (a simulated
  kernel), the method's label and the fields whose fidelity differs.

`matrix.claims(plan)` records what a plan claims for every family, so the doc
can show the claims no test exercised.

The file is TCPOOM_MATRIX_RESULTS, by default build/matrix-results.jsonl; a
pytest session starts it afresh with its first record (a session that records
nothing leaves the previous one alone).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Iterable, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "TCPOOM_MATRIX_RESULTS"
DEFAULT = os.path.join(ROOT, "build", "matrix-results.jsonl")
THIS_MACHINE = "this machine"

#: the pytest command line, set by conftest.py; written at the top of the file
session_args: List[str] = []
_started = set()        # results files this process has started afresh


def results_path() -> str:
    return os.environ.get(ENV) or DEFAULT


def append(record: dict, path: Optional[str] = None) -> None:
    path = path or results_path()
    first = path not in _started
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w" if first else "a") as f:
        if first:
            f.write(json.dumps({"kind": "session", "args": session_args,
                                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        f.write(json.dumps(record) + "\n")      # fields stay in the plan's order
    _started.add(path)


def read(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fidelities(family_plan: dict) -> Dict[str, str]:
    """field -> fidelity, from a plan's family (its fields are {"fidelity": ..., "how": ...}
    in a plan, bare strings in a report)."""
    return {name: (v["fidelity"] if isinstance(v, dict) else v)
            for name, v in family_plan.get("fields", {}).items()}


def plan_of_report(host: dict) -> dict:
    """The plan stored in a recording, from one host of `tcpoom report --format json`."""
    src = host.get("source") or {}
    return {"kernel": src.get("kernel"), "engine": src.get("engine"), "families": host.get("plan") or {}}


def _row(plan: dict, family: str, where: str, method: Optional[str] = None,
         fidelity: Optional[Dict[str, str]] = None) -> dict:
    fp = plan["families"][family]
    return {"kernel": plan["kernel"], "engine": plan.get("engine") or "co-re", "where": where,
            "family": family, "method": method or f"{fp['method']} {fp['target']}",
            "fields": {**fidelities(fp), **(fidelity or {})}}


class Recorder:
    """Records for one test (`test` is its pytest node id)."""

    def __init__(self, test: str, path: Optional[str] = None):
        self.test = test
        self.path = path

    def claims(self, plan: dict, where: str = THIS_MACHINE) -> None:
        for family, fp in plan["families"].items():
            rejected = [f"{r['method']}: {r['reason']}" if isinstance(r, dict) else f"{r[0]}: {r[1]}"
                        for r in fp.get("rejected", [])]
            append({"kind": "claim", **_row(plan, family, where), "rejected": rejected,
                    "test": self.test}, self.path)

    def check(self, plan: dict, family: str, checked: str, *, fields: Iterable[str] = (),
              used: Optional[str] = None, figures: Optional[str] = None, where: str = THIS_MACHINE,
              method: Optional[str] = None, fidelity: Optional[Dict[str, str]] = None) -> None:
        row = _row(plan, family, where, method, fidelity)
        fp = plan["families"][family]
        if used is not None:
            planned = f"{fp['method']} {fp['target']}" if " " in used else fp["method"]
            assert used == planned, f"{family}: the tracer used {used!r}, its plan says {planned!r}"
        fields = list(fields)
        unknown = [f for f in fields if f not in row["fields"]]
        assert not unknown, f"{family}: fields {unknown} are not in the plan"
        append({"kind": "check", **row, "checked": checked, "verified": fields,
                "figures": figures, "test": self.test}, self.path)
