"""Options shared by the commands that attach: what to watch and how much to buffer."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import click

from tracer.capture.capture import resolve_netns
from tracer.kernel.loader import Filters
from tracer.kernel.plan import ENGINES
from tracer.kernel.plan.owner import NO_OWNER_ENV
from tracer.model.families import FAMILY_ORDER


def engine_option():
    """--engine auto|co-re|bcc (also $TCPOOM_ENGINE)."""
    return click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
                        envvar="TCPOOM_ENGINE",
                        help="co-re: the compiled objects, through BTF; bcc: compiled at start against "
                             "the kernel headers (kernels without BTF); auto: co-re where the kernel "
                             "has BTF, else bcc where its headers are installed.")


def _no_owner(ctx, param, value: bool) -> None:
    # The plan reads the same switch as the environment variable, so a command's child
    # processes (serve's flight recorder, a preload) plan alike.
    if value:
        os.environ[NO_OWNER_ENV] = "1"


def capture_options(ringbuf_default: int):
    """--netns, --pid, --cgroup, --container, --port, --family, --engine, --ringbuf-size and the hidden
    --synthetic-pid, as keyword arguments of the command."""
    def wrap(f):
        for opt in reversed([
            click.option("--netns", help="Only this network namespace: a name (ip netns), a path "
                                         "or an inode number."),
            click.option("--pid", type=click.IntRange(min=1),
                         help="Only sockets owned by this process: the one that listened, closed, or last "
                              "sent or received on them (not the task a softirq "
                              "interrupted); the context task where no owner was seen."),
            click.option("--cgroup", "cgroup_path", metavar="PATH",
                         help="Only sockets whose owner (or socket, or memory cgroup) is in this cgroup "
                              "or below it: a path such as /system.slice/nginx.service."),
            click.option("--container", metavar="ID",
                         help="Only sockets of this container or pod: a container id prefix, a pod "
                              "UID, a pod namespace/name, or a systemd unit."),
            click.option("--port", type=click.IntRange(min=1, max=65535),
                         help="Only sockets with this local or remote port."),
            click.option("--family", "families", multiple=True, type=click.Choice(FAMILY_ORDER),
                         help="Only these event families (repeatable)."),
            click.option("--no-owner", is_flag=True, expose_value=False, callback=_no_owner,
                         help=f"Do not track socket owners (also ${NO_OWNER_ENV}=1): each event names "
                              "the task it ran in. Saves about 1.2 us of kernel time a connection "
                              "(one socket storage each), for hosts that make connections at very "
                              "high rates."),
            engine_option(),
            click.option("--ringbuf-size", type=click.IntRange(min=4096), default=ringbuf_default,
                         show_default=True, help="Ring buffer bytes (a power of two)."),
            click.option("--synthetic-pid", type=int, default=0, hidden=True,
                         help="Benchmarks: also load the synthetic source, driven by this "
                              "process's getpid()."),
        ]):
            f = opt(f)
        return f
    return wrap


def filters_from(netns: Optional[str], pid: Optional[int], port: Optional[int],
                 families: Tuple[str, ...], ringbuf_size: int, cgroup_path: Optional[str] = None,
                 container: Optional[str] = None) -> Filters:
    if ringbuf_size & (ringbuf_size - 1):
        raise click.BadParameter("must be a power of two", param_hint="--ringbuf-size")
    if cgroup_path is not None and not cgroup_path.strip():
        raise click.BadParameter("an empty path", param_hint="--cgroup")
    if container is not None and not container.strip():
        raise click.BadParameter("an empty id", param_hint="--container")
    return Filters(netns=resolve_netns(netns), pid=pid or 0, port=port or 0,
                   families=list(families) or None, cgroup=cgroup_path, container=container)
