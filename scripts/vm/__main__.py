"""python3 -m scripts.vm [--kernel 6.1] [options] -- COMMAND [ARG...]

Boot a stock Debian kernel under qemu (TCG) with this machine's root filesystem
shared read-only, run COMMAND as root in the current directory, print its
output as it comes, and exit with its exit status. Exit status 125 when the VM
could not run it (one line on stderr says why).
"""
from __future__ import annotations

import argparse
import sys

from .errors import VMError
from .kernels import SERIES, get_headers, get_kernel
from .runner import DEFAULT_WRITABLE, run_in_vm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m scripts.vm", description=__doc__.split("\n\n")[1])
    ap.add_argument("--kernel", default="6.1",
                    help=f"a series ({', '.join(SERIES)}), a Debian release or a linux-image .deb "
                         f"(default 6.1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    ap.add_argument("--memory", default="3G", help="guest memory (default 3G)")
    ap.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    ap.add_argument("--writable", action="append", metavar="DIR",
                    help=f"a tmpfs over DIR in the guest (repeatable; default "
                         f"{' '.join(DEFAULT_WRITABLE)})")
    ap.add_argument("--fetch-only", action="store_true",
                    help="download and unpack the kernel into the cache, boot nothing")
    ap.add_argument("--console", action="store_true", help="print the kernel console afterwards")
    ap.add_argument("--bzimage", action="store_true",
                    help="boot the packaged bzImage (decompressor, KASLR: 10-15 s slower) instead "
                         "of the extracted vmlinux")
    ap.add_argument("--headers", action="store_true",
                    help="the kernel's linux-headers packages at /lib/modules/<release>/build in the "
                         "guest (for the bcc engine; fetched once)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if args.fetch_only:
            k = get_kernel(args.kernel)
            print(f"{k.release}: {k.directory}")
            if args.headers:
                print(f"{k.release} headers: {get_headers(k)}")
            return 0
        if not command:
            ap.error("no command (put it after --)")
        result = run_in_vm(command, args.kernel, timeout=args.timeout, memory=args.memory,
                           cpus=args.cpus, writable=tuple(args.writable or DEFAULT_WRITABLE),
                           stream=sys.stdout, fast_boot=not args.bzimage,
                           headers=args.headers)
    except VMError as e:
        print(f"scripts.vm: {str(e).splitlines()[0]}", file=sys.stderr)
        if "\n" in str(e):
            print(str(e).split("\n", 1)[1], file=sys.stderr)
        return 125
    if args.console:
        print(result.console, file=sys.stderr)
    print(f"scripts.vm: {result.release}: exit {result.exit_code}, booted in "
          f"{result.boot_seconds:.1f} s, {result.seconds:.1f} s in all", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
