"""Stock Debian kernels for the VM runner: find, download, extract, cache.

A kernel is named by its series ("6.1", "6.12"), by a full Debian release
("6.1.0-56-amd64", "6.12.117+deb12-amd64") or by the path of a linux-image .deb.
Each release is unpacked once into the cache (default /var/cache/tcpoom-vm,
or $TCPOOM_VM_CACHE):

    <cache>/<release>/vmlinuz        the kernel as packaged (bzImage)
    <cache>/<release>/vmlinux        the same, uncompressed (ELF): qemu boots it through
                                     its PVH entry, skipping the decompressor, which takes
                                     10-15 s under TCG
    <cache>/<release>/config         its /boot/config-<release>
    <cache>/<release>/modules/*.ko   the modules the guest loads, decompressed
    <cache>/<release>/modules.load   their names in load order (dependencies first)
    <cache>/<release>/meta.json      package, version
    <cache>/<release>/headers/       linux-headers-<release> and what it links to (the
                                     -common tree, linux-kbuild), unpacked, for the bcc
                                     engine: fetched only when asked (get_headers)
    <cache>/debs/*.deb               the downloaded packages

A series already in the cache is used as it is, without asking apt (the newest
cached release of that series); refresh=True looks for a newer one.
"""
from __future__ import annotations

import glob
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import VMError

DEFAULT_CACHE = "/var/cache/tcpoom-vm"

#: series -> regular expression of the Debian image package names of that series
#: (the signed, generic amd64 flavour; the group is the ABI number or patch level)
SERIES = {
    "6.1": r"linux-image-6\.1\.0-(\d+)-amd64",
    "6.12": r"linux-image-6\.12\.(\d+)\+deb\d+-amd64",
}

#: modules the guest needs for its root filesystem (9p over virtio-pci); each is
#: loaded with its dependencies, unless the kernel has it built in
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")


@dataclass
class Kernel:
    release: str
    directory: str
    package: str = ""
    version: str = ""

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.directory, "vmlinuz")

    @property
    def boot_image(self) -> str:
        """The uncompressed vmlinux where it could be extracted, else the bzImage."""
        vmlinux = os.path.join(self.directory, "vmlinux")
        return vmlinux if os.path.exists(vmlinux) else self.vmlinuz

    @property
    def config(self) -> str:
        return os.path.join(self.directory, "config")

    def modules(self) -> List[str]:
        """Module file paths in load order."""
        with open(os.path.join(self.directory, "modules.load")) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        return [os.path.join(self.directory, "modules", n + ".ko") for n in names]


def cache_dir(override: Optional[str] = None) -> str:
    return override or os.environ.get("TCPOOM_VM_CACHE") or DEFAULT_CACHE


def _series_of(release: str) -> Optional[str]:
    for series, pattern in SERIES.items():
        if re.fullmatch(pattern, "linux-image-" + release):
            return series
    return None


def _cached(cache: str) -> Dict[str, Kernel]:
    out = {}
    for meta in glob.glob(os.path.join(cache, "*", "meta.json")):
        d = os.path.dirname(meta)
        try:
            with open(meta) as f:
                m = json.load(f)
        except (OSError, ValueError):
            continue
        if all(os.path.exists(os.path.join(d, n)) for n in ("vmlinuz", "modules.load")):
            out[m["release"]] = Kernel(m["release"], d, m.get("package", ""), m.get("version", ""))
    return out


def _sort_key(series: str, release: str) -> Tuple[int, ...]:
    m = re.fullmatch(SERIES[series], "linux-image-" + release)
    return (int(m.group(1)),) if m else (-1,)


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise VMError(f"{tool} not found: apt-get install {package}")
    return path


def _apt_update() -> None:
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)


def _apt_candidates(series: str, updated: bool = False) -> List[str]:
    """Image packages of the series that apt knows (its local package lists;
    updated once when they know none)."""
    _need("apt-cache", "apt")
    out = subprocess.run(["apt-cache", "pkgnames", "linux-image-6."], capture_output=True,
                         text=True, timeout=60).stdout.split()
    names = [n for n in out if re.fullmatch(SERIES[series], n)]
    if not names and not updated:
        _apt_update()
        return _apt_candidates(series, updated=True)
    return sorted(names, key=lambda n: _sort_key(series, n[len("linux-image-"):]))


def _download(package: str, cache: str) -> str:
    _need("apt-get", "apt")
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    found = glob.glob(os.path.join(debs, package + "_*.deb"))
    if found:
        return sorted(found)[-1]
    for attempt in (1, 2):
        proc = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True,
                              text=True, timeout=900)
        found = glob.glob(os.path.join(debs, package + "_*.deb"))
        if proc.returncode == 0 and found:
            return sorted(found)[-1]
        if attempt == 1:
            _apt_update()   # stale lists name a package the archive has replaced
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise VMError(f"apt-get download {package} failed: {last}")


def _modinfo(data: bytes, key: str) -> Optional[str]:
    m = re.search(rb"(?:^|\0)" + key.encode() + rb"=([^\0]*)\0", data)
    return m.group(1).decode() if m else None


def _read_module(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        zstd = _need("zstd", "zstd")
        return subprocess.run([zstd, "-dc", path], capture_output=True, check=True).stdout
    if path.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    return data


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def _resolve_modules(moddir: str, roots) -> List[Tuple[str, bytes]]:
    """(name, decompressed contents) of roots and their dependencies, dependencies first."""
    index = {}
    for dirpath, _, files in os.walk(os.path.join(moddir, "kernel")):
        for fn in files:
            if re.search(r"\.ko(\.(xz|zst|gz))?$", fn):
                index[_module_name(fn)] = os.path.join(dirpath, fn)
    builtin = set()
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            builtin = {_module_name(ln.strip()) for ln in f if ln.strip()}
    except OSError:
        pass
    order: List[Tuple[str, bytes]] = []
    seen = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin:
                return
            raise VMError(f"module {name} is neither in the kernel package nor built in")
        data = _read_module(index[name])
        for dep in filter(None, (_modinfo(data, "depends") or "").split(",")):
            visit(dep)
        order.append((name, data))

    for r in roots:
        visit(r)
    return order


def extract_vmlinux(bzimage: str, out: str) -> bool:
    """Write the ELF vmlinux inside a bzImage to `out`; False where its compression
    is not one this can undo (then the bzImage boots, only slower)."""
    with open(bzimage, "rb") as f:
        data = f.read()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return False
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start:start + payload_length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor().decompress(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd"):
            zstd = shutil.which("zstd")
            if not zstd:
                return False
            proc = subprocess.run([zstd, "-dc"], input=payload, capture_output=True, timeout=120)
            elf = proc.stdout
        elif payload.startswith(b"\x1f\x8b"):
            import gzip
            elf = gzip.decompress(payload)
        else:
            return False
    except (lzma.LZMAError, OSError, EOFError, subprocess.SubprocessError):
        return False
    if not elf.startswith(b"\x7fELF"):
        return False
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, out)
    return True


def _unpack(deb: str, cache: str) -> Kernel:
    _need("dpkg-deb", "dpkg")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        proc = subprocess.run(["dpkg-deb", "-x", deb, tmp], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise VMError(f"dpkg-deb -x {os.path.basename(deb)} failed: {proc.stderr.strip()}")
        images = glob.glob(os.path.join(tmp, "boot", "vmlinuz-*"))
        if not images:
            raise VMError(f"{os.path.basename(deb)} holds no /boot/vmlinuz-*")
        release = os.path.basename(images[0])[len("vmlinuz-"):]
        modules = _resolve_modules(os.path.join(tmp, "lib", "modules", release), ROOT_MODULES)
        info = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version"], capture_output=True,
                              text=True).stdout
        fields = dict(ln.split(": ", 1) for ln in info.splitlines() if ": " in ln)
        final = os.path.join(cache, release)
        staging = final + ".new"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(os.path.join(staging, "modules"))
        shutil.copy(images[0], os.path.join(staging, "vmlinuz"))
        extract_vmlinux(images[0], os.path.join(staging, "vmlinux"))
        shutil.copy(os.path.join(tmp, "boot", f"config-{release}"), os.path.join(staging, "config"))
        for name, data in modules:
            with open(os.path.join(staging, "modules", name + ".ko"), "wb") as f:
                f.write(data)
        with open(os.path.join(staging, "modules.load"), "w") as f:
            f.write("".join(name + "\n" for name, _ in modules))
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump({"release": release, "package": fields.get("Package", ""),
                       "version": fields.get("Version", ""), "deb": os.path.basename(deb)}, f)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
    return _cached(cache)[release]


def _with_vmlinux(k: Kernel) -> Kernel:
    """Extract the vmlinux of a release cached before extraction existed (once)."""
    vmlinux = os.path.join(k.directory, "vmlinux")
    tried = vmlinux + ".none"
    if not os.path.exists(vmlinux) and not os.path.exists(tried):
        if not extract_vmlinux(k.vmlinuz, vmlinux):
            open(tried, "w").close()
    return k


def _deb_field(deb: str, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True,
                          timeout=60).stdout.strip()


def get_headers(k: Kernel) -> str:
    """The kernel's headers tree, as /lib/modules/<release>/build would point to
    it: linux-headers-<release> at the image's version, plus the packages its
    symlinks lead into (linux-headers-*-common, linux-kbuild-*), unpacked once
    into <cache>/<release>/headers."""
    root = os.path.join(k.directory, "headers")
    build = os.path.join(root, "usr", "src", "linux-headers-" + k.release)
    if os.path.isdir(os.path.join(build, "include")):
        return build
    _need("dpkg-deb", "dpkg")
    if not k.version:
        raise VMError(f"{k.release}: no package version in meta.json to fetch matching headers")
    cache = os.path.dirname(k.directory)
    main = _download_version("linux-headers-" + k.release, k.version, cache)
    # "linux-headers-6.1.0-56-common (= 6.1.192-2), linux-kbuild-6.1 (>= 6.1.192-2), ..."
    debs = [main]
    for dep in _deb_field(main, "Depends").split(","):
        name = dep.strip().split(" ")[0]
        if name.startswith(("linux-headers-", "linux-kbuild-")):
            debs.append(_download_version(name, k.version, cache))
    staging = root + ".new"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-x", deb, staging], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise VMError(f"dpkg-deb -x {os.path.basename(deb)} failed: {proc.stderr.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    os.rename(staging, root)
    if not os.path.isdir(os.path.join(build, "include")):
        raise VMError(f"linux-headers-{k.release} holds no {build[len(root):]}/include")
    return build


def headers_source(build: str) -> str:
    """The -common tree next to a Debian headers build directory (its
    /lib/modules/<release>/source), or the build directory itself."""
    with open(os.path.join(build, "Makefile")) as f:
        m = re.search(r"include\s+/usr/src/(linux-headers-[^/\s]+)/Makefile", f.read())
    if not m:
        return build
    return os.path.join(os.path.dirname(build), m.group(1))


def _download_version(package: str, version: str, cache: str) -> str:
    """apt-get download package=version into <cache>/debs, once."""
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    pattern = os.path.join(debs, f"{package}_{version.replace(':', '%3a')}_*.deb")
    if glob.glob(pattern):
        return glob.glob(pattern)[0]
    for attempt in (1, 2):
        proc = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=debs,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode == 0 and glob.glob(pattern):
            return glob.glob(pattern)[0]
        if attempt == 1:
            _apt_update()
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise VMError(f"apt-get download {package}={version} failed: {last}")


def get_kernel(name: str, cache: Optional[str] = None, refresh: bool = False) -> Kernel:
    """The kernel named `name`, downloaded and unpacked if not cached yet."""
    return _with_vmlinux(_get_kernel(name, cache, refresh))


def _get_kernel(name: str, cache: Optional[str], refresh: bool) -> Kernel:
    cache = cache_dir(cache)
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        raise VMError(f"cannot create the kernel cache {cache}: {e.strerror}") from None
    cached = _cached(cache)
    if name.endswith(".deb"):
        if not os.path.exists(name):
            raise VMError(f"{name}: no such file")
        return _unpack(os.path.abspath(name), cache)
    if name in cached:
        return cached[name]
    if name in SERIES:
        have = sorted((r for r in cached if _series_of(r) == name), key=lambda r: _sort_key(name, r))
        if have and not refresh:
            return cached[have[-1]]
        candidates = _apt_candidates(name)
        if not candidates:
            if have:
                return cached[have[-1]]
            raise VMError(f"no linux-image package of series {name} in apt's lists "
                          f"(run apt-get update; Debian bookworm has them)")
        package = candidates[-1]
        release = package[len("linux-image-"):]
        if release in cached:
            return cached[release]
        return _unpack(_download(package, cache), cache)
    series = _series_of(name)
    if series is None:
        raise VMError(f"unknown kernel {name!r}: a series ({', '.join(SERIES)}), a Debian release "
                      f"such as 6.1.0-56-amd64, or a linux-image .deb")
    return _unpack(_download("linux-image-" + name, cache), cache)
