"""Where tcpoom keeps what holds for one boot: the kernel facts, the minimised
BTF and the objects a zipapp extracts. /run is a tmpfs, emptied at reboot, so
a first start after boot finds nothing there. TCPOOM_RUN_DIR moves it: the
start-up benchmark's --cold mode gives each start an empty directory of its own
instead of emptying the one every other tcpoom on the host shares."""
from __future__ import annotations

import os

RUN_DIR = os.environ.get("TCPOOM_RUN_DIR") or "/run/tcpoom"
