"""The minimised BTF kept per boot (tracer/kernel/btfcache.py): made by bpftool in
the background after a start, used by the next start, and dropped when
libbpf cannot use it."""
import os
import shutil
import time

import pytest

from tracer.kernel import btfcache, facts as kernel_facts, loader
from tracer.kernel.plan import build

pytestmark = pytest.mark.kernel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(btfcache, "CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TCPOOM_NO_BTF_CACHE", raising=False)
    return tmp_path


def plan():
    facts = kernel_facts.gather()
    return facts, build(facts)


@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool makes the minimised BTF")
def test_made_after_a_start_and_used_by_the_next(cache):
    facts, p = plan()
    assert btfcache.cached(loader.OBJECT) is None
    loader.start(facts, p, loader.Filters()).close()
    for _ in range(100):
        if btfcache.cached(loader.OBJECT):
            break
        time.sleep(0.1)
    path = btfcache.cached(loader.OBJECT)
    assert path and os.path.getsize(path) < 64 << 10     # a few types, not the kernel's 5 MB
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]
    session = loader.Session(p, loader.Filters()).start()
    try:
        assert session._opts.btf_custom_path == path.encode()
    finally:
        session.close()


def test_a_copy_libbpf_cannot_use_is_dropped(cache):
    facts, p = plan()
    path = btfcache.path_for(loader.OBJECT)
    with open(path, "wb") as f:
        f.write(b"not BTF at all")
    session = loader.Session(p, loader.Filters()).start()     # falls back to the kernel's BTF
    session.close()
    assert not os.path.exists(path)


def test_turned_off(cache, monkeypatch):
    monkeypatch.setenv("TCPOOM_NO_BTF_CACHE", "1")
    with open(btfcache.path_for(loader.OBJECT), "wb") as f:
        f.write(b"x")
    assert btfcache.cached(loader.OBJECT) is None
