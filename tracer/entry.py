"""The `tcpoom` entry point: starts the BPF load for an attaching command
(preload.py) before the CLI and click are imported, then runs the CLI."""
from __future__ import annotations

import sys

from . import preload


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    preload.start(args)
    try:
        from .cli import main as cli_main
        return cli_main(args)
    finally:
        preload.discard()
