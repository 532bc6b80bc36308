"""The pressure lab: reproduce TCP socket-memory conditions on demand, in a private netns.

    from scripts.lab import Lab, SCENARIOS
    with Lab(allow_global_sysctls=True) as lab:
        # attach a tracer filtered on lab.netns_inode here
        result = lab.run("tw_overflow", count=300)
        result.deltas["TCPTimeWaitOverflow"], result.kmsg_lines, result.ok

Run from the repository root: python3 -m scripts.lab SCENARIO [--count N]
[--allow-global-sysctls] [--json]. Needs root (namespaces, sysctls, /dev/kmsg).
"""

from .context import COUNTERS, LabError
from .lab import Lab, Result
from .scenarios import SCENARIOS, Scenario

__all__ = ["Lab", "Result", "LabError", "SCENARIOS", "Scenario", "COUNTERS"]
