"""The lab counts kernel log lines with the tracer's own reader (tracer/kmsg.py)."""
from tracer.kmsg import (OUT_OF_MEMORY, ORPHANS, PATTERNS, SUPPRESSED,  # noqa: F401
                         KernelLog, count_lines, suppressed_total)
