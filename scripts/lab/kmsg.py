"""The lab counts kernel log lines with the tracer's own reader (tracer/host/kmsg.py)."""
from tracer.host.kmsg import (OUT_OF_MEMORY, ORPHANS, PATTERNS, SUPPRESSED, KernelLog,  # noqa: F401
                              count_lines, suppressed_total)
