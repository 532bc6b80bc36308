"""python3 -m scripts.lab SCENARIO [--count N] [--allow-global-sysctls] [--json]

Exit status: 0 when the kernel counters moved as expected, 1 when they did not,
2 when the lab refused or could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .context import LabError
from .lab import Lab, Result
from .scenarios import SCENARIOS


def _scenario_list() -> str:
    rows = []
    for s in SCENARIOS.values():
        flag = " [needs --allow-global-sysctls]" if s.needs_global_sysctls else ""
        rows.append(f"  {s.name:<16} {s.description} (default count {s.default_count}){flag}")
    return "scenarios:\n" + "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m scripts.lab",
        description="Reproduce TCP socket-memory conditions in a private network namespace "
                    "and report the kernel counters and log lines they caused.",
        epilog=_scenario_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS), metavar="SCENARIO")
    parser.add_argument("--count", type=int, default=None,
                        help="connections to use (default: per scenario)")
    parser.add_argument("--allow-global-sysctls", action="store_true",
                        help="allow host-wide sysctl changes (tcp_mem, tcp_max_orphans); "
                             "they are restored afterwards")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _print_human(result: Result) -> None:
    print(f"{result.scenario}: {result.count} connections in netns {result.netns_name} "
          f"(inode {result.netns_inode}), {result.duration_s:.3f} s")
    print("kernel counters (TcpExt, in the lab namespace):")
    for name, delta in result.deltas.items():
        want = result.expected.get(name)
        note = ""
        if want is not None:
            low, high = want
            note = f"   expected {low}" if low == high else \
                f"   expected {low}..{'' if high is None else high}"
        print(f"  {name:<26} {delta:+d}{note}")
    print("kernel log lines:")
    for pattern, n in result.kmsg_lines.items():
        print(f"  {n:>4}  {pattern}")
    if result.kmsg_suppressed:
        print(f"        (net_ratelimit reported {result.kmsg_suppressed} suppressed messages)")
    for key, value in result.details.items():
        print(f"  {key}: {value}")
    failures = result.failures()
    print("OK" if not failures else "NOT AS EXPECTED: " + "; ".join(failures))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, sysctls, /dev/kmsg)", file=sys.stderr)
        return 2
    spec = SCENARIOS[args.scenario]
    if spec.needs_global_sysctls and not args.allow_global_sysctls:
        print(f"{spec.name} changes host-wide sysctls for a moment (restored afterwards); "
              f"rerun with --allow-global-sysctls to allow it", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 2
    try:
        with Lab(allow_global_sysctls=args.allow_global_sysctls) as lab:
            result = lab.run(args.scenario, args.count)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab: interrupted; sysctls restored, namespace deleted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_human(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
