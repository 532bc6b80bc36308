"""Fresh Debian roots on this kernel, for install tests: a stock bookworm or
bullseye as debootstrap makes it (minbase with Debian's own python3), entered
with chroot.

The base root of each suite is made once and kept as a tar in CACHE_DIR
(debootstrap takes minutes, unpacking a copy a few seconds); every Root is a
fresh copy, unmounted and deleted on exit.

    python3 -m scripts.roots bookworm -- sh -c 'cd /src && scripts/setup'
    python3 -m scripts.roots bookworm --src --shell     (a shell in a fresh copy)

Mounts: the root is bind-mounted onto itself (`ip netns exec` remounts /sys in
a new mount namespace and refuses when / is not a mount point), then /proc, an
rbind of /dev and /sys (BTF, tracefs), and the host's lab lock file, so a lab
inside the root still waits for a lab on the host (they share the host-wide
sysctls: scripts/lab/hostlock.py).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

CACHE_DIR = "/var/cache/tcpoom-roots"
WORK_DIR = "/var/tmp"
LAB_LOCK = "/run/tcpoom-lab.lock"
#: what the base root has beyond debootstrap's minbase: the interpreter a
#: user's README command runs with, and certificates for https mirrors
INCLUDE = "python3,ca-certificates"
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb"}


class RootError(Exception):
    pass


def mirrors() -> Dict[str, str]:
    """The machine's own apt mirrors: {"debian": URI, "debian-security": URI}."""
    found: Dict[str, str] = {}
    files = glob.glob("/etc/apt/sources.list.d/*.sources") + glob.glob("/etc/apt/sources.list.d/*.list")
    if os.path.exists("/etc/apt/sources.list"):
        files.append("/etc/apt/sources.list")
    for path in sorted(files):
        with open(path) as f:
            text = f.read()
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            uri = uri.rstrip("/")
            key = "debian-security" if uri.endswith("-security") else "debian" if uri.endswith("/debian") else None
            if key:
                found.setdefault(key, uri)
    found.setdefault("debian", "http://deb.debian.org/debian")
    found.setdefault("debian-security", "http://deb.debian.org/debian-security")
    return found


def sources_list(suite: str) -> str:
    m = mirrors()
    lines = [f"deb {m['debian']} {suite} main", f"deb {m['debian']} {suite}-updates main",
             f"deb {m['debian-security']} {suite}-security main"]
    return "\n".join(lines) + "\n"


def _run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RootError(f"{' '.join(cmd)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def _chroot(root: str, script: str) -> None:
    _run(["chroot", root, "/bin/sh", "-c", script], env=ROOT_ENV)


def base_tar(suite: str) -> str:
    """The cached base root of `suite`, made now if missing."""
    tar = os.path.join(CACHE_DIR, f"{suite}.tar")
    if os.path.exists(tar):
        return tar
    if not shutil.which("debootstrap"):
        raise RootError("debootstrap is not installed (scripts/setup --test installs it)")
    os.makedirs(CACHE_DIR, exist_ok=True)
    build = tempfile.mkdtemp(prefix=f"tcpoom-debootstrap-{suite}-", dir=WORK_DIR)
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", suite, build,
              mirrors()["debian"]])
        with open(os.path.join(build, "etc/apt/sources.list"), "w") as f:
            f.write(sources_list(suite))
        # this machine reaches its mirrors through a proxy with its own CA:
        # the root's package clients need those certificates too
        for crt in glob.glob("/usr/local/share/ca-certificates/*.crt"):
            shutil.copy(crt, os.path.join(build, "usr/local/share/ca-certificates"))
        _chroot(build, "update-ca-certificates >/dev/null && apt-get update -qq && apt-get clean")
        fd, part = tempfile.mkstemp(prefix=f"{suite}.", suffix=".part", dir=CACHE_DIR)
        os.close(fd)
        _run(["tar", "--numeric-owner", "-C", build, "-cf", part, "."])
        os.replace(part, tar)
    finally:
        _unmount_all(build)
        _remove(build)
    return tar


def mounts_under(path: str) -> List[str]:
    path = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == path or target.startswith(path + "/"):
                out.append(target)
    return out


def _unmount_all(path: str) -> None:
    if mounts_under(path):
        subprocess.run(["umount", "-R", path], capture_output=True)
    if mounts_under(path):
        subprocess.run(["umount", "-R", "-l", path], capture_output=True)
    left = mounts_under(path)
    if left:
        raise RootError(f"still mounted under {path}: {left}")


def _remove(path: str) -> None:
    # never follow a mount out of the copy: /dev and /sys are bound inside it
    if mounts_under(path):
        raise RootError(f"refusing to delete {path}: mounts left under it")
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


class Root:
    """A fresh copy of a suite's base root, mounted for chroot; gone on exit."""

    def __init__(self, suite: str, src: Optional[str] = None):
        self.suite = suite
        self.src = src              # a source tree copied to /src in the root
        self.path = ""

    def __enter__(self) -> "Root":
        tar = base_tar(self.suite)
        self.path = tempfile.mkdtemp(prefix=f"tcpoom-root-{self.suite}-", dir=WORK_DIR)
        try:
            _run(["tar", "--numeric-owner", "-C", self.path, "-xf", tar])
            if self.src:
                self.copy_in(self.src, "/src")
            p = self.path
            _run(["mount", "--bind", p, p])
            _run(["mount", "--make-private", p])
            _run(["mount", "-t", "proc", "proc", f"{p}/proc"])
            _run(["mount", "--rbind", "/dev", f"{p}/dev"])
            _run(["mount", "--make-rslave", f"{p}/dev"])
            _run(["mount", "--rbind", "/sys", f"{p}/sys"])
            _run(["mount", "--make-rslave", f"{p}/sys"])
            os.close(os.open(LAB_LOCK, os.O_RDWR | os.O_CREAT, 0o600))
            os.close(os.open(f"{p}{LAB_LOCK}", os.O_RDWR | os.O_CREAT, 0o600))
            _run(["mount", "--bind", LAB_LOCK, f"{p}{LAB_LOCK}"])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.path:
            _unmount_all(self.path)
            _remove(self.path)
            self.path = ""

    def copy_in(self, source: str, target: str) -> None:
        dest = self.path + target
        if os.path.isdir(source):
            shutil.copytree(source, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".git", "build", "*.egg-info",
                                                          ".pytest_cache", "dist"))
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(source, dest)

    def run(self, script: str, timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
        """`sh -c script` in the root as root; stdout and stderr together."""
        r = subprocess.run(["chroot", self.path, "/bin/sh", "-c", script], env=ROOT_ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RootError(f"in {self.suite} root: {script}: exit {r.returncode}:\n{r.stdout[-3000:]}")
        return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m scripts.roots", description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=["bookworm", "bullseye"])
    ap.add_argument("--src", action="store_true", help="copy this source tree to /src in the root")
    ap.add_argument("--shell", action="store_true", help="an interactive shell in the root; "
                    "or a command after --")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if os.geteuid() != 0:
        print("roots: needs root (debootstrap, mount, chroot)", file=sys.stderr)
        return 77
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if args.src else None
    try:
        with Root(args.suite, src) as root:
            if args.shell:
                return subprocess.call(["chroot", root.path, "/bin/bash"], env=ROOT_ENV)
            if command:
                return subprocess.call(["chroot", root.path, *command], env=ROOT_ENV)
    except RootError as exc:
        print(f"roots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
