"""tcpoom installed as a user installs it, on stock Debian userlands sharing
this kernel: fresh debootstrapped bookworm and bullseye roots (scripts/roots.py;
the base roots are cached in /var/cache/tcpoom-roots, every test unpacks its
own copy and deletes it). In each: the .deb through apt, the zipapp on nothing
but python3 and libbpf, README's first command verbatim, and a lab scenario
traced with counts equal to the kernel's counter."""
import os
import re
import subprocess

import pytest

from conftest import ROOT
from scripts import build_deb, build_pyz, roots
from tracer import __version__

pytestmark = pytest.mark.kernel

#: libbpf.so.1 for bullseye, whose archive has libbpf0 (0.3) only and whose
#: backports are gone from the mirrors: Debian 12's build (it needs GLIBC_2.28
#: symbols, bullseye has 2.31; the package's "libc6 (>= 2.34)" is stricter)
LIBBPF_DEBS = os.path.join(roots.CACHE_DIR, "debs")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist"))
    return {"deb": build_deb.build(out), "pyz": build_pyz.build(out)}


@pytest.fixture(scope="module")
def libbpf1_deb():
    os.makedirs(LIBBPF_DEBS, exist_ok=True)
    found = [f for f in os.listdir(LIBBPF_DEBS) if f.startswith("libbpf1_")]
    if not found:
        subprocess.run(["apt-get", "download", "-qq", "libbpf1"], cwd=LIBBPF_DEBS, check=True,
                       capture_output=True)
        found = [f for f in os.listdir(LIBBPF_DEBS) if f.startswith("libbpf1_")]
    return os.path.join(LIBBPF_DEBS, sorted(found)[-1])


def lab_scripts(root):
    """The lab and counts_check in /src. The lab reads namespaces and /proc
    through tracer modules of the source tree; the tcpoom traced is the one
    named to counts_check (run as a command, the source tree not on its path)."""
    root.copy_in(os.path.join(ROOT, "scripts"), "/src/scripts")
    root.copy_in(os.path.join(ROOT, "tracer"), "/src/tracer")


def traced_exactly(root, tracer):
    r = root.run(f"cd /src && python3 -m scripts.counts_check --runs 1 --tracer '{tracer}' tw_overflow",
                 timeout=600)
    assert r.returncode == 0, r.stdout
    seen, kernel = map(int, re.search(r"seen/kernel: (\d+)/(\d+)", r.stdout).groups())
    assert seen == kernel > 0
    return seen


def no_mounts_left():
    return [m for m in roots.mounts_under(roots.WORK_DIR) if "tcpoom-root-" in m]


def test_the_deb_installs_with_apt_on_fresh_bookworm_and_traces_exact_counts(dist):
    with roots.Root("bookworm") as root:
        root.copy_in(dist["deb"], "/root/dist/" + os.path.basename(dist["deb"]))
        root.run("apt-get update -qq && cd /root && apt-get install -y -qq ./dist/tcpoom_*.deb "
                 "iproute2 >/dev/null", timeout=600, check=True)
        assert root.run("tcpoom --version", check=True).stdout.strip() == f"tcpoom, version {__version__}"
        probes = root.run("tcpoom probes", check=True).stdout
        assert "oom_check:" in probes and "tw_overflow:" in probes
        for f in ("/usr/share/man/man1/tcpoom.1.gz", "/usr/share/bash-completion/completions/tcpoom"):
            assert os.path.exists(root.path + f), f
        assert "TCPOOM" in root.run("zcat /usr/share/man/man1/tcpoom.1.gz | head -1").stdout
        # Depends from Debian: no pip, no click or rich of ours
        assert root.run("dpkg -s python3-click python3-rich libbpf1 >/dev/null").returncode == 0
        lab_scripts(root)
        traced_exactly(root, "tcpoom")
        # removal leaves nothing: the byte-code postinst made is removed by prerm
        root.run("apt-get remove -y -qq tcpoom >/dev/null", check=True)
        assert not os.path.exists(root.path + "/usr/share/tcpoom")
    assert no_mounts_left() == []


@pytest.mark.parametrize("suite", ["bookworm", "bullseye"])
def test_the_pyz_traces_exact_counts_with_only_python3_and_libbpf(dist, libbpf1_deb, suite):
    with roots.Root(suite) as root:
        if suite == "bullseye":
            root.copy_in(libbpf1_deb, "/root/libbpf1.deb")
            root.run("apt-get update -qq && apt-get install -y -qq libelf1 iproute2 >/dev/null && "
                     "dpkg-deb -x /root/libbpf1.deb / && ldconfig", timeout=600, check=True)
        else:
            root.run("apt-get update -qq && apt-get install -y -qq libbpf1 iproute2 >/dev/null",
                     timeout=600, check=True)
        # nothing of tcpoom's Python dependencies in the root: they are in the pyz
        assert root.run("python3 -c 'import click'").returncode != 0
        assert root.run("python3 -c 'import rich'").returncode != 0
        root.copy_in(dist["pyz"], "/root/tcpoom.pyz")
        version = root.run("python3 /root/tcpoom.pyz --version", check=True).stdout.strip()
        assert version == f"tcpoom, version {__version__}"
        lab_scripts(root)
        traced_exactly(root, "python3 /root/tcpoom.pyz")
    assert no_mounts_left() == []


def test_readme_first_command_verbatim_on_fresh_bookworm():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    first = re.search(r"```sh\n(.+?)\n```", readme).group(1)      # set up, then the demo
    with roots.Root("bookworm", src=ROOT) as root:
        # the root's python3 is Debian's, externally managed (PEP 668)
        assert root.run("ls /usr/lib/python3.*/EXTERNALLY-MANAGED").returncode == 0
        r = root.run(f"cd /src && {first}", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:]
        assert "tcpoom: stopped" in r.stdout
    assert no_mounts_left() == []
