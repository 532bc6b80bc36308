"""The bcc engine's user-space side, without a kernel to compile for (the real
thing runs in the 6.1 guest: tests/test_vm_bcc.py)."""
import builtins
import filecmp
import os
import re

import pytest

from conftest import DATA, ROOT
from tracer.kernel import bcc_engine
from tracer.kernel import objects as objects_mod
from tracer.errors import LoadError, UsageError
from tracer.model.events import EVENT_SIZE
from tracer.kernel.facts import KernelFacts
from tracer.kernel.loader import Filters
from tracer.kernel.plan import build


def bcc_plan():
    f = KernelFacts.load(os.path.join(DATA, "facts-6.1-debian-vm.json"))
    f.headers = True
    return build(f, engine="bcc")


def bcc_text_files():
    """tcpoom_bcc.c and every header it includes, followed to the end."""
    names, todo = [], ["tcpoom_bcc.c"]
    while todo:
        name = todo.pop(0)
        if name in names:
            continue
        names.append(name)
        with open(os.path.join(ROOT, "bpf", name)) as f:
            todo += re.findall(r'^#include "([^"]+)"', f.read(), re.M)
    return names


def test_the_bcc_text_shares_the_verdict_header_with_the_co_re_object():
    assert bcc_text_files() == ["tcpoom_bcc.c", "verdict.h", "tcpoom.h"]
    with open(os.path.join(ROOT, "bpf", "common.bpf.h")) as f:
        assert '#include "verdict.h"' in f.read()


@pytest.mark.parametrize("name", bcc_text_files())
def test_the_shipped_text_is_the_source(name):
    # a source checkout compiles bpf/ itself; the installed forms copy it at build time
    assert os.path.samefile(bcc_engine.SOURCE_DIR, os.path.join(ROOT, "bpf"))
    assert filecmp.cmp(os.path.join(ROOT, "bpf", name), os.path.join(bcc_engine.SOURCE_DIR, name),
                       shallow=False)


def test_the_package_directory_holds_only_what_build_bpf_makes():
    objects = {f[:-2] + ".o" for f in os.listdir(os.path.join(ROOT, "bpf")) if f.endswith(".bpf.c")}
    # the objects only: the C text is kept in bpf/ alone, not committed twice
    assert set(os.listdir(objects_mod.HERE)) == objects == set(objects_mod.OBJECTS)
    assert list(objects_mod.BCC_TEXT) == bcc_text_files()
    # and a zipapp writes out exactly those files (tracer/kernel/objects.py)
    assert set(objects_mod.NAMES) == objects | set(bcc_text_files())


def test_an_installed_form_compiles_the_text_shipped_beside_the_objects(tmp_path, monkeypatch):
    # no bpf/ beside the package (pip, the .deb, the zipapp): what the build copied in
    packaged = tmp_path / "bpfobj"
    objects_mod.ship_bcc_text(os.path.join(ROOT, "bpf"), str(packaged))
    assert sorted(os.listdir(packaged)) == sorted(bcc_text_files())
    monkeypatch.setattr(objects_mod, "SOURCE_TREE", str(tmp_path / "no-bpf"))
    monkeypatch.setattr(objects_mod, "HERE", str(packaged))
    assert objects_mod.bcc_directory() == str(packaged)


def test_defines_carry_filters_layout_and_addresses():
    p = bcc_plan()
    s = bcc_engine.BccSession(p, Filters(netns=4026531840, pid=7, port=80), 1 << 20)
    flags = s.cflags()
    assert f"-I{bcc_engine.SOURCE_DIR}" in flags
    assert "-DFILTER_NETNS=4026531840" in flags and "-DFILTER_PID=7" in flags
    assert "-DFILTER_PORT=80" in flags and "-DRINGBUF_PAGES=256" in flags
    assert f"-DTCPOOM_EVENT_SIZE={EVENT_SIZE}" in flags
    assert f"-DORPHAN_CACHE_ADDR={p.config['orphan_cache_addr']:#x}ULL" in flags
    # only the wanted families' programs are attached
    s = bcc_engine.BccSession(p, Filters(families=["tw_overflow"]))
    assert s.programs == ["twsk_alloc_kprobe", "twsk_alloc_kretprobe"]


def test_forced_wakeups_share_a_quarter_of_the_ring_among_the_cpus(monkeypatch):
    from tracer.model.events import STRIDE
    assert bcc_engine.wakeup_every(4 << 20, 2) == (1 << 20) // STRIDE // 2
    assert bcc_engine.wakeup_every(1 << 16, 4096) == 1       # never 0: a wakeup per record
    monkeypatch.setattr(bcc_engine.os, "cpu_count", lambda: 4)
    flags = bcc_engine.BccSession(bcc_plan(), Filters(), 1 << 20).cflags()
    assert f"-DWAKEUP_EVERY={(1 << 18) // STRIDE // 4}" in flags


def test_a_co_re_plan_is_not_for_the_bcc_engine():
    f = KernelFacts.load(os.path.join(DATA, "facts-6.1-debian-vm.json"))
    with pytest.raises(ValueError):
        bcc_engine.BccSession(build(f), Filters())


def test_the_synthetic_source_is_co_re_only():
    with pytest.raises(UsageError):
        bcc_engine.start(KernelFacts(), bcc_plan(), Filters(), synthetic_pid=1)


def test_without_bcc_the_error_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_bcc(name, *args, **kwargs):
        if name == "bcc" or name.startswith("bcc."):
            raise ImportError("No module named 'bcc'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bcc)
    monkeypatch.setattr(bcc_engine, "DIST_PACKAGES", ())
    with pytest.raises(LoadError) as e:
        bcc_engine.import_bcc()
    assert "apt-get install python3-bpfcc" in str(e.value) and "\n" not in str(e.value)


def test_bcc_is_found_for_this_python_when_installed_for_the_system_one():
    if not any(os.path.isdir(os.path.join(d, "bcc")) for d in bcc_engine.DIST_PACKAGES):
        pytest.skip("python3-bpfcc not installed (scripts/setup --test installs it)")
    BPF = bcc_engine.import_bcc()
    assert BPF.__name__ == "BPF"


def test_neither_btf_nor_headers_stops_capture_with_exit_code_3(monkeypatch):
    """auto on a kernel with neither (recorded 4.19 facts, headers taken away):
    CO-RE's plan is counters only and the capture refuses it in one line."""
    from tracer.capture import capture
    from tracer.capture.capture import Capture
    from tracer.errors import KernelUnsupported

    monkeypatch.setattr(capture, "privileged", lambda: True)     # no root: nothing is loaded
    f = KernelFacts.load(os.path.join(DATA, "facts-4.19-no-btf.json"))
    f.headers = False
    cap = Capture(Filters(), facts=f)
    assert cap.engine == "co-re" and cap.plan.engine == "none"
    with pytest.raises(KernelUnsupported) as e:
        cap.start()
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert "no BTF" in str(e.value) and "no kernel headers either" in str(e.value)
    # with headers, auto is the bcc engine
    f.headers = True
    assert Capture(Filters(), facts=f).engine == "bcc"
