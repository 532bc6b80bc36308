"""The `tcpoom` command: one click group, one module per subcommand."""
from __future__ import annotations

import gc
import sys

import click

from tracer import __version__
from tracer.errors import TcpoomError

# (module, command) pairs: the module's docstring is the command's help text
COMMANDS = (("probes", "probes"), ("trace", "trace"), ("record", "record"), ("report", "report"), ("replay", "replay"), ("export", "export"), ("parse", "parse"), ("live", "live"), ("doctor", "doctor"))


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that command runs: `tcpoom
    trace` on a host in trouble should not pay for the report renderers and
    the dashboard (about 100 ms of imports, a third of its start-up)."""

    def list_commands(self, ctx):
        return [name for _, name in COMMANDS]

    def get_command(self, ctx, name):
        import importlib
        module = dict((n, m) for m, n in COMMANDS).get(name)
        if module is None:
            return None
        command = getattr(importlib.import_module(f".commands.{module}", __package__), name)
        gc.enable()         # off while importing (entry.py); the command's work makes garbage
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
# the version from the source, not package metadata: a zipapp or a Debian
# package has none that importlib.metadata finds
@click.version_option(__version__, "-V", "--version", prog_name="tcpoom")
def cli() -> None:
    """Trace every TCP socket-memory decision of the Linux kernel: orphan aborts,
    tcp_mem refusals, TIME_WAIT bucket overflows and memory pressure."""


def main(argv=None) -> int:
    """Entry point. Exit codes are decided here only (README "Exit codes"): 0 ok,
    1 error, 2 usage, 3 kernel unsupported, 4 BPF load refused, 5 reported from a
    damaged file (a warning: what could be read was), 77 permission needed,
    130 SIGINT. Every error is one line on stderr."""
    try:
        cli.main(args=argv, prog_name="tcpoom", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "tcpoom"
        print(f"{where}: usage: {e.format_message()} (see `{where} --help`)", file=sys.stderr)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except TcpoomError as e:
        print(f"tcpoom: {e.kind}: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as e:        # an input or output the checks above could not foresee
        where = f"{e.filename}: " if e.filename else ""
        print(f"tcpoom: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
