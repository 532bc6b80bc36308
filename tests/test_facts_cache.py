"""The per-boot cache of kernel facts: the same facts as a fresh gathering,
and a cache from another boot, another kernel or a damaged file is ignored."""
import json
import os

import pytest

from tracer.kernel import facts as kernel_facts

pytestmark = pytest.mark.kernel


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_facts, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TCPOOM_NO_FACTS_CACHE", raising=False)
    return tmp_path / "cache"


def cache_file(cache_dir):
    files = os.listdir(cache_dir)
    assert len(files) == 1
    return cache_dir / files[0]


def test_cached_facts_equal_fresh_ones(cache_dir, monkeypatch):
    first = kernel_facts.gather()
    assert oct(os.stat(cache_file(cache_dir)).st_mode & 0o777) == "0o600"

    def no_lookups(f):
        raise AssertionError("looked up again despite the cache")

    original = kernel_facts._gather_boot_stable
    monkeypatch.setattr(kernel_facts, "_gather_boot_stable", no_lookups)
    assert kernel_facts.gather() == first
    # turned off: looked up afresh, and the same
    monkeypatch.setattr(kernel_facts, "_gather_boot_stable", original)
    monkeypatch.setenv("TCPOOM_NO_FACTS_CACHE", "1")
    assert kernel_facts.gather() == first


@pytest.mark.parametrize("damage", ["other boot", "other release", "not json", "facts missing"])
def test_a_cache_that_does_not_match_is_ignored(cache_dir, monkeypatch, damage):
    fresh = kernel_facts.gather()
    path = cache_file(cache_dir)
    data = json.loads(path.read_text())
    if damage == "other boot":
        data["key"]["boot_id"] = "another"
    elif damage == "other release":
        data["key"]["release"] = "1.0"
    elif damage == "facts missing":
        del data["facts"]["kallsyms_data"]
    path.write_text("{" if damage == "not json" else json.dumps(dict(data, facts=dict(
        data["facts"], fentry_errno=12345))) if damage != "facts missing" else json.dumps(data))
    assert kernel_facts.gather() == fresh


def test_run_dir_moves_every_per_boot_cache(tmp_path):
    """TCPOOM_RUN_DIR (the cold start benchmark): the facts, the minimised BTF and
    an extracted zipapp's objects all go there, nothing to /run/tcpoom."""
    import subprocess
    import sys
    from conftest import ROOT
    code = ("from tracer.kernel import btfcache, facts, objects; "
            "print(facts.CACHE_DIR, btfcache.CACHE_DIR, objects.RUN_DIR); facts.gather()")
    env = dict(os.environ, TCPOOM_RUN_DIR=str(tmp_path))
    env.pop("TCPOOM_NO_FACTS_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.split() == [str(tmp_path)] * 3
    assert [n for n in os.listdir(tmp_path) if n.startswith("facts-")]
