"""The guest's initramfs: busybox, the kernel's modules, an init script, and a job.

Two newc cpio archives, concatenated (the kernel unpacks them in turn):
  base (cached per kernel release): /init, /bin/busybox, /modules/*.ko,
       /modules.load, /config
  job (per run): /job/vars.sh (settings for /init) and /job/job.sh (run in the chroot)

/init loads the modules, mounts this machine's root read-only over 9p at
/newroot, puts tmpfs over the writable directories, mounts proc, sys, dev,
bpffs, tracefs and debugfs, a tmpfs /boot holding the guest kernel's config
and /lib/modules/<release> with its modules (and, when asked, build and
source links to the kernel's headers unpacked on this machine), chroots, runs the job with its
output on the second serial port (/dev/ttyS1) between two marker lines, and
powers off. The kernel console is the first serial port.
"""
from __future__ import annotations

import io
import os
import shlex
from typing import Dict, Iterable, Optional, Sequence

from .errors import VMError
from .kernels import Kernel

BEGIN = "=== tcpoom-vm: begin ==="
EXIT_PREFIX = "=== tcpoom-vm: exit "
ERROR_PREFIX = "=== tcpoom-vm: error: "
MARK_END = " ==="

INIT = r"""#!/bin/busybox sh
# tcpoom VM init (scripts/vm/initramfs.py)
/bin/busybox --install -s /bin
PATH=/bin
export PATH
OUT=/dev/ttyS1
say() { echo "tcpoom-vm: $*"; }
die() {
    say "$*"
    echo "=== tcpoom-vm: error: $* ===" > $OUT
    sync
    poweroff -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -F $OUT raw -echo 2>/dev/null
. /job/vars.sh
while read m; do
    insmod /modules/$m.ko || die "insmod $m failed"
done < /modules.load
R=/newroot
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=$MSIZE$NINEP_OPTS root $R \
    || die "mounting the host's root over 9p failed"
# a working directory under a directory that becomes a tmpfs (a checkout in
# /tmp, say) stays visible: hold it aside, bind it back over the tmpfs
if [ -n "$KEEP" ]; then
    mkdir -p /keep && mount --bind "$R$KEEP" /keep || die "cannot keep $KEEP visible"
fi
for d in $WRITABLE; do
    [ -d "$R$d" ] || die "cannot make $d writable: no such directory on the host"
    case "$d" in */tmp) mode=1777 ;; *) mode=0755 ;; esac
    mount -t tmpfs -o mode=$mode tmpfs "$R$d" || die "tmpfs on $d failed"
done
if [ -n "$KEEP" ]; then
    mkdir -p "$R$KEEP" && mount --bind /keep "$R$KEEP" || die "cannot bind $KEEP back"
fi
mount -t proc proc $R/proc || die "proc"
mount -t sysfs sysfs $R/sys || die "sysfs"
mount -t devtmpfs devtmpfs $R/dev || die "devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t bpf bpf $R/sys/fs/bpf || die "bpffs"
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
REL=$(uname -r)
if [ -d $R/boot ]; then
    mount -t tmpfs tmpfs $R/boot && cp /config $R/boot/config-$REL
fi
if [ -d $R/lib/modules ]; then
    mount -t tmpfs tmpfs $R/lib/modules && mkdir -p $R/lib/modules/$REL/kernel \
        && cp /modules/*.ko $R/lib/modules/$REL/kernel/
fi
# kernel headers (for bcc), linked where a Debian linux-headers package puts them
if [ -n "$HEADERS" ]; then
    [ -d $R/lib/modules/$REL ] || die "no /lib/modules on the host to hold the headers' links"
    ln -s "$HEADERS" $R/lib/modules/$REL/build && ln -s "$HEADERS_SOURCE" $R/lib/modules/$REL/source \
        || die "cannot link the kernel headers"
fi
hostname tcpoom-vm
ip link set lo up
[ -n "$PRINTK" ] && echo "$PRINTK" > /proc/sys/kernel/printk
say "running the job"
echo "=== tcpoom-vm: begin ===" > $OUT
env -i chroot $R /bin/sh -c "$(cat /job/job.sh)" < /dev/null > $OUT 2>&1
rc=$?
printf '\n=== tcpoom-vm: exit %s ===\n' $rc > $OUT
sync
poweroff -f
"""

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class Cpio:
    """A newc (SVR4, no CRC) archive writer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        self.buf.write(name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        name = name.strip("/")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


def busybox_path() -> str:
    for p in BUSYBOX_CANDIDATES:
        if os.path.exists(p):
            with open(p, "rb") as f:
                head = f.read(4096)
            # a dynamically linked busybox would need the host's libc in the initramfs
            if b"/lib64/ld-linux" not in head and b"ld-linux-x86-64" not in head:
                return p
    raise VMError("a static busybox is needed for the guest's initramfs: apt-get install busybox-static")


def base_archive(kernel: Kernel) -> str:
    """The cached base archive of this kernel (rebuilt when its inputs change)."""
    path = os.path.join(kernel.directory, "base.cpio")
    bb = busybox_path()
    inputs = [bb, kernel.config, __file__] + kernel.modules()
    if os.path.exists(path) and all(os.path.getmtime(p) <= os.path.getmtime(path) for p in inputs):
        return path
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "job", "modules"):
        c.dir(d)
    with open(bb, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    with open(kernel.config, "rb") as f:
        c.file("config", f.read())
    names = []
    for m in kernel.modules():
        with open(m, "rb") as f:
            c.file("modules/" + os.path.basename(m), f.read())
        names.append(os.path.basename(m)[:-3])
    c.file("modules.load", "".join(n + "\n" for n in names).encode())
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(c.finish())
    os.replace(tmp, path)
    return path


def job_script(argv: Sequence[str], cwd: str, env: Dict[str, str]) -> str:
    lines = ["# tcpoom VM job"]
    for k, v in sorted(env.items()):
        lines.append(f"export {k}={shlex.quote(v)}")
    lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def job_archive(argv: Sequence[str], cwd: str, env: Dict[str, str], writable: Iterable[str],
                msize: int, ninep_opts: str, printk: Optional[str],
                headers: Optional[Sequence[str]] = None) -> bytes:
    """`headers`: (build, source) directories on this machine to link at
    /lib/modules/<release>/build and /source in the guest."""
    for d in writable:
        if not d.startswith("/") or any(ch.isspace() for ch in d) or d.rstrip("/") in ("", "/proc", "/sys", "/dev"):
            raise VMError(f"writable directory {d!r}: an absolute path without spaces, not / proc sys dev")
    c = Cpio()
    c.dir("job")
    keep = ""
    for d in writable:
        if cwd.startswith(d.rstrip("/") + "/"):
            keep = cwd
    if any(ch.isspace() for ch in keep):
        raise VMError(f"the working directory {cwd!r} is under a guest tmpfs and has spaces")
    vars_sh = [f"WRITABLE={shlex.quote(' '.join(d.rstrip('/') for d in writable))}",
               f"KEEP={shlex.quote(keep)}",
               f"MSIZE={int(msize)}",
               f"NINEP_OPTS={shlex.quote(ninep_opts)}",
               f"PRINTK={shlex.quote(printk or '')}",
               f"HEADERS={shlex.quote(headers[0] if headers else '')}",
               f"HEADERS_SOURCE={shlex.quote(headers[1] if headers else '')}"]
    c.file("job/vars.sh", ("\n".join(vars_sh) + "\n").encode())
    c.file("job/job.sh", job_script(argv, cwd, env).encode())
    return c.finish()


def write_initrd(path: str, kernel: Kernel, job: bytes) -> None:
    with open(base_archive(kernel), "rb") as f:
        base = f.read()
    with open(path, "wb") as f:
        f.write(base)
        f.write(job)



