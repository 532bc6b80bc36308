"""Boot a stock Debian kernel under qemu (TCG) on this machine's root filesystem
and run one command in it.

    code, output = run_in_vm(["python3", "-m", "tracer", "probes"], kernel="6.12")

The guest sees this machine's / read-only over 9p, with tmpfs over the writable
directories (/tmp, /run, /var/tmp by default), its own proc/sys/dev/bpffs/
tracefs, and runs the command as root in `cwd` (default: the caller's) with a
small environment (PATH, HOME, PYTHONPATH, TCPOOM_*, ... and `env`). Its
stdout and stderr, merged, come back over the second serial port between two
marker lines; the kernel console (first serial port) is kept in the result for
when something goes wrong.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Dict, IO, Iterator, Optional, Sequence, Union

from . import initramfs
from .errors import VMError, VMTimeout
from .kernels import Kernel, get_headers, get_kernel, headers_source

QEMU = "qemu-system-x86_64"
DEFAULT_WRITABLE = ("/tmp", "/run", "/var/tmp")
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME",
            "PYTHONPATH", "PYENV_ROOT", "PYENV_VERSION")
PASS_ENV_PREFIXES = ("TCPOOM_",)
# one message size of 9p over virtio: the largest the guest's transport takes
MSIZE = 512000


class VMResult:
    """What a run gave: unpacks as (exit_code, output)."""

    def __init__(self, exit_code: int, output: str, console: str, kernel: Kernel,
                 boot_seconds: float, seconds: float):
        self.exit_code = exit_code
        self.output = output
        self.console = console
        self.kernel = kernel
        self.release = kernel.release
        self.boot_seconds = boot_seconds     # qemu start to the command's start
        self.seconds = seconds               # qemu start to qemu exit

    def __iter__(self) -> Iterator:
        return iter((self.exit_code, self.output))

    def __getitem__(self, i):
        return (self.exit_code, self.output)[i]

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return (f"VMResult(release={self.release!r}, exit_code={self.exit_code}, "
                f"boot={self.boot_seconds:.1f}s, total={self.seconds:.1f}s, "
                f"output={len(self.output)} chars)")


def qemu_path() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise VMError(f"{QEMU} not found: apt-get install qemu-system-x86")
    return path


def guest_env(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    out.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    out.setdefault("HOME", "/root")
    # the root filesystem is read-only: no byte-code files; and no block buffering
    # in the serial pipe, so output arrives as it is printed
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    out["PYTHONUNBUFFERED"] = "1"
    out.update(env or {})
    for k in out:
        if not k.replace("_", "a").isalnum() or k[0].isdigit():
            raise VMError(f"environment variable name {k!r} cannot be passed to the guest")
    return out


class _Reader(threading.Thread):
    """Reads the job's serial port; echoes the job's output to `stream` as it comes."""

    def __init__(self, pipe: IO[bytes], stream: Optional[IO[str]], started: float):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.stream = stream
        self.started = started
        self.data = bytearray()
        self.begin_at: Optional[float] = None
        self._pending = b""
        self._in_job = False
        self._held_blank = False

    def run(self) -> None:
        while True:
            chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(4096)
            if not chunk:
                break
            self.data += chunk
            if self.begin_at is None and initramfs.BEGIN.encode() in self.data:
                self.begin_at = time.monotonic() - self.started
            if self.stream is not None:
                self._echo(chunk)

    def _echo(self, chunk: bytes) -> None:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if not self._in_job:
                self._in_job = line == initramfs.BEGIN
                continue
            if line.startswith((initramfs.EXIT_PREFIX, initramfs.ERROR_PREFIX)):
                self._in_job = False
                self._held_blank = False
                continue
            if self._held_blank:
                self.stream.write("\n")
                self._held_blank = False
            if line == "":
                self._held_blank = True     # the blank line init prints before the exit marker
                continue
            self.stream.write(line + "\n")
            self.stream.flush()


def _tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def run_in_vm(argv: Union[str, Sequence[str]], kernel: str = "6.1", *,
              cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
              timeout: float = 300.0, memory: str = "3G", cpus: int = 2,
              writable: Sequence[str] = DEFAULT_WRITABLE, stream: Optional[IO[str]] = None,
              cache: Optional[str] = None, ninep_opts: str = ",cache=loose",
              printk: Optional[str] = "4 4 1 7", cmdline_extra: str = "",
              fast_boot: bool = True, mttcg: bool = False, headers: bool = False,
              cancel: Optional[threading.Event] = None) -> VMResult:
    """Boot `kernel` ("6.1", "6.12", a Debian release or a .deb), run `argv` as root
    in `cwd` on this machine's root filesystem, and return (exit code, output).

    `argv` as a string runs through /bin/sh -c. Raises VMError (VMTimeout after
    `timeout` seconds) when the guest could not run the command to its end.

    fast_boot boots the uncompressed vmlinux through qemu's PVH entry (no
    decompressor: 10-15 s less under TCG, but no KASLR); False boots the
    packaged bzImage as a real host does.

    mttcg runs each guest CPU on its own host thread. Off by default: kernel
    text patched while another guest CPU runs it (a static key flipped when
    the TSC is found unsynchronized at boot, ftrace/BPF trampolines at attach)
    is not always seen coherently under multi-threaded TCG; seen here as
    "Oops: int3" in sched_clock_cpu during boot, now and then.

    headers fetches the kernel's Debian linux-headers packages (once, into the
    cache) and links them at /lib/modules/<release>/build and /source in the
    guest, as installing them would: what the bcc engine compiles against.
    The guest's /lib/modules is a tmpfs mounted over this machine's, which
    therefore has to exist (created here, empty, where it does not).

    cancel, once set, kills the guest (VMError): for a guest booted in the
    background whose results are no longer wanted."""
    qemu = qemu_path()
    if isinstance(argv, str):
        argv = ["/bin/sh", "-c", argv]
    if not argv:
        raise VMError("no command to run")
    cwd = os.path.abspath(cwd or os.getcwd())
    for d in writable:
        if cwd == d.rstrip("/"):
            raise VMError(f"the working directory {cwd} is a fresh tmpfs in the guest")
    k = get_kernel(kernel, cache)
    header_dirs = None
    if headers:
        build = get_headers(k)
        header_dirs = (build, headers_source(build))
        try:
            os.makedirs("/lib/modules", exist_ok=True)
        except OSError as e:
            raise VMError(f"the guest's kernel headers need a /lib/modules mount point here: "
                          f"{e.strerror}") from None
    job = initramfs.job_archive(argv, cwd, guest_env(env), writable, MSIZE, ninep_opts, printk,
                                header_dirs)
    with tempfile.TemporaryDirectory(prefix="tcpoom-vm-") as tmp:
        initrd = os.path.join(tmp, "initrd.cpio")
        console_path = os.path.join(tmp, "console.log")
        initramfs.write_initrd(initrd, k, job)
        append = ("console=ttyS0 rdinit=/init panic=-1 mitigations=off quiet "
                  "random.trust_cpu=on " + cmdline_extra).strip()
        cmd = [qemu, "-accel", "tcg,thread=" + ("multi" if mttcg else "single"), "-nodefaults", "-nographic", "-no-reboot",
               "-monitor", "none", "-cpu", "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt", "-smp", str(cpus), "-m", memory,
               "-kernel", k.boot_image if fast_boot else k.vmlinuz, "-initrd", initrd, "-append", append,
               "-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
               "-serial", f"file:{console_path}", "-serial", "stdio"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        reader = _Reader(proc.stdout, stream, started)
        reader.start()
        err_chunks = []
        err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
        err_reader.start()
        timed_out = cancelled = False
        try:
            deadline = started + timeout
            while proc.poll() is None:
                cancelled = cancel is not None and cancel.is_set()
                timed_out = time.monotonic() >= deadline
                if cancelled or timed_out:
                    proc.kill()
                    proc.wait()
                    break
                try:
                    proc.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        reader.join(10)
        err_reader.join(10)
        seconds = time.monotonic() - started
        try:
            with open(console_path, errors="replace") as f:
                console = f.read()
        except OSError:
            console = ""
    raw = bytes(reader.data).decode(errors="replace")
    qemu_err = b"".join(c for c in err_chunks if c).decode(errors="replace").strip()
    if cancelled:
        raise VMError(f"the guest ({k.release}) was cancelled")
    if timed_out:
        raise VMTimeout(f"the guest ({k.release}) did not finish within {timeout:.0f} s; "
                        f"console tail:\n{_tail(console)}\noutput tail:\n{_tail(raw)}")
    begin = raw.find(initramfs.BEGIN + "\n")
    err_at = raw.find(initramfs.ERROR_PREFIX)
    if err_at >= 0:
        msg = raw[err_at + len(initramfs.ERROR_PREFIX):].split(initramfs.MARK_END)[0]
        raise VMError(f"guest init ({k.release}): {msg}")
    end = raw.rfind("\n" + initramfs.EXIT_PREFIX)
    if begin < 0 or end < begin:
        why = f"qemu: {qemu_err.splitlines()[-1]}" if qemu_err else "no exit marker"
        raise VMError(f"the guest ({k.release}) stopped before the command finished ({why}); "
                      f"console tail:\n{_tail(console)}")
    output = raw[begin + len(initramfs.BEGIN) + 1:end]
    code_text = raw[end + 1 + len(initramfs.EXIT_PREFIX):].split(initramfs.MARK_END)[0]
    try:
        code = int(code_text)
    except ValueError:
        raise VMError(f"unreadable exit marker from the guest: {code_text!r}") from None
    return VMResult(code, output, console, k, reader.begin_at or seconds, seconds)
