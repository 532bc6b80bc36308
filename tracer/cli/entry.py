"""The `tcpoom` entry point: starts the BPF load for an attaching command
(preload.py) before the CLI and click are imported, then runs the CLI."""
from __future__ import annotations

import gc
import sys

from tracer.kernel import preload


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    # importing click and the tracer makes ~30k objects and no garbage: the
    # collector's passes over them cost ~4 ms of start-up. The CLI turns it
    # back on once the command's module is imported (cli._LazyGroup).
    gc.disable()
    try:
        preload.start(args)
        from .app import main as cli_main
        return cli_main(args)
    except KeyboardInterrupt:       # Ctrl-C before the CLI's own handling
        return 130
    finally:
        gc.enable()
        preload.discard()
