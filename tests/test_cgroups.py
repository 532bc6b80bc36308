"""cgroup id -> path -> service/container, and socket memory per cgroup, on fake trees."""
from __future__ import annotations

import os

import pytest

from tracer.host import cgroups as cg

CID = "4f5c1a2b" * 8
CID2 = "0123abcd" * 8
UID = "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"

MOUNTINFO = """\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / {v2} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / {mem} rw,nosuid - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
"""


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def hybrid(tmp_path):
    v2, mem = tmp_path / "unified", tmp_path / "memory"
    for rel in ("system.slice/nginx.service", "system.slice/docker-%s.scope" % CID,
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/cri-containerd-%s.scope"
                % (UID.replace("-", "_"), CID2)):
        os.makedirs(v2 / rel)
        os.makedirs(mem / rel)
    _write(str(v2 / "cgroup.controllers"), "hugetlb\n")
    svc = mem / "system.slice/nginx.service"
    _write(str(svc / "memory.kmem.tcp.usage_in_bytes"), "1048576\n")
    _write(str(svc / "memory.kmem.tcp.limit_in_bytes"), "2097152\n")
    _write(str(svc / "memory.kmem.tcp.max_usage_in_bytes"), "2097152\n")
    _write(str(svc / "memory.kmem.tcp.failcnt"), "7\n")
    _write(str(mem / "memory.kmem.tcp.usage_in_bytes"), "0\n")
    _write(str(mem / "memory.kmem.tcp.limit_in_bytes"), "9223372036854771712\n")
    mi = tmp_path / "mountinfo"
    _write(str(mi), MOUNTINFO.format(v2=v2, mem=mem))
    return tmp_path, cg.read_mounts(str(mi))


def test_mounts_hybrid(hybrid):
    _, m = hybrid
    assert m.mode == "hybrid"
    assert m.memory_root.endswith("memory")       # v2 has no memory controller here
    assert m.v2.endswith("unified")


def test_mounts_v2_with_memory(tmp_path):
    v2 = tmp_path / "cg"
    _write(str(v2 / "cgroup.controllers"), "cpu memory io\n")
    _write(str(tmp_path / "mi"), "26 25 0:23 / %s rw - cgroup2 cgroup2 rw\n" % v2)
    m = cg.read_mounts(str(tmp_path / "mi"))
    assert m.mode == "v2" and m.memory_root == str(v2)


def test_id_is_the_directory_inode(hybrid):
    root, m = hybrid
    d = root / "unified/system.slice/nginx.service"
    r = cg.Resolver(m.v2)
    assert r.path(os.stat(d).st_ino) == "/system.slice/nginx.service"
    assert r.path(os.stat(m.v2).st_ino) == "/"


def test_miss_rescans_rate_limited(hybrid):
    root, m = hybrid
    now = [100.0]
    r = cg.Resolver(m.v2, clock=lambda: now[0])
    assert r.path(1) is None                      # nothing has inode 1 in a tmp tree
    os.makedirs(root / "unified/late.slice")
    ino = os.stat(root / "unified/late.slice").st_ino
    assert r.path(ino) is None                    # within RESCAN_EVERY_S: no walk
    now[0] += cg.RESCAN_EVERY_S
    assert r.path(ino) == "/late.slice"


def test_cache_is_bounded(hybrid, monkeypatch):
    _, m = hybrid
    monkeypatch.setattr(cg, "MAX_ENTRIES", 3)
    r = cg.Resolver(m.v2)
    ino = os.stat(os.path.join(m.v2, "system.slice/nginx.service")).st_ino
    assert r.path(ino) == "/system.slice/nginx.service"
    assert len(r._paths) <= 3


@pytest.mark.parametrize("path,want", [
    ("/system.slice/nginx.service", dict(unit="nginx.service", slice="system.slice", label="nginx.service")),
    ("/user.slice/user-1000.slice/session-3.scope", dict(unit="session-3.scope", slice="user-1000.slice")),
    ("/system.slice/docker-%s.scope" % CID, dict(runtime="docker", container=CID, label="docker:" + CID[:12])),
    ("/docker/%s" % CID, dict(runtime="docker", container=CID)),
    ("/system.slice/crio-%s.scope" % CID, dict(runtime="crio", container=CID)),
    ("/machine.slice/libpod-%s.scope" % CID, dict(runtime="podman", container=CID)),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/cri-containerd-%s.scope"
     % (UID.replace("-", "_"), CID2),
     dict(runtime="containerd", container=CID2, pod_uid=UID, qos="burstable")),
    ("/kubepods/besteffort/pod%s/%s" % (UID, CID2), dict(container=CID2, pod_uid=UID, qos="besteffort")),
    ("/kubepods/pod%s/%s" % (UID, CID2), dict(container=CID2, pod_uid=UID, qos="guaranteed")),
    ("/", dict(unit=None, container=None, label="/")),
])
def test_decode(path, want):
    ident = cg.decode(path)
    for k, v in want.items():
        got = ident.label if k == "label" else getattr(ident, k)
        assert got == v, (k, got)


def test_pod_names_from_kubelet_log_dirs(tmp_path):
    os.makedirs(tmp_path / ("shop_cart-7d9f_%s" % UID))
    pods = cg.pod_names(str(tmp_path))
    assert pods == {UID: "shop/cart-7d9f"}
    ident = cg.decode("/kubepods/burstable/pod%s/%s" % (UID, CID2), pods)
    assert ident.pod == "shop/cart-7d9f"
    assert ident.label == "shop/cart-7d9f/" + CID2[:12]
    for q in (CID2[:12], UID, "shop/cart-7d9f", "cart-7d9f"):
        assert ident.matches(q), q
    assert not ident.matches("ffff")


def test_v1_sock_memory(hybrid):
    _, m = hybrid
    sm = cg.sock_memory(m.memory_root, "/system.slice/nginx.service", "v1")
    assert (sm.sock, sm.limit, sm.peak, sm.failcnt) == (1 << 20, 2 << 20, 2 << 20, 7)
    assert sm.percent == 50.0
    assert sm.limit_name == "memory.kmem.tcp.limit_in_bytes"
    root = cg.sock_memory(m.memory_root, "/", "v1")
    assert root.limit is None                     # LONG_MAX page-rounded is "no limit"


def test_v2_sock_memory(tmp_path):
    d = tmp_path / "app.slice"
    _write(str(d / "memory.stat"), "anon 100\nfile 0\nsock 40960\nshmem 0\n")
    _write(str(d / "memory.max"), "1048576\n")
    _write(str(d / "memory.high"), "max\n")
    _write(str(d / "memory.current"), "524288\n")
    sm = cg.sock_memory(str(tmp_path), "/app.slice", "v2")
    assert (sm.sock, sm.limit, sm.high, sm.usage) == (40960, 1 << 20, None, 1 << 19)
    assert sm.percent == 50.0 and sm.limit_name == "memory.max"


def test_sock_memory_all_largest_first(hybrid):
    _, m = hybrid
    rows = cg.sock_memory_all(m)
    assert [r.path for r in rows] == ["/system.slice/nginx.service"]
    assert cg.sock_memory_all(m, only_limited=True)[0].limit == 2 << 20


def test_table_round_trip(hybrid):
    """Names resolved on the traced host are recorded and read back elsewhere."""
    _, m = hybrid
    here = cg.Cgroups(mounts=m, pods={})
    ino = os.stat(os.path.join(m.v2, "system.slice/docker-%s.scope" % CID)).st_ino
    assert here.name(cg.V2, ino) == "docker:" + CID[:12]
    block = here.drain()
    assert block["mode"] == "hybrid" and here.drain() is None
    there = cg.Names()
    assert there.name(cg.V2, ino) == "cgroup:%d" % ino
    there.learn(block)
    assert there.name(cg.V2, ino) == "docker:" + CID[:12]
    assert there.path(cg.V2, ino) == "/system.slice/docker-%s.scope" % CID


def test_cgroup_filter_matches_subtree():
    assert cg.matches_path("/system.slice/nginx.service", "system.slice")
    assert cg.matches_path("/system.slice", "/system.slice/")
    assert not cg.matches_path("/system.slicex/a", "/system.slice")
    assert not cg.matches_path(None, "/")


def test_unreadable_hierarchy_never_raises(tmp_path):
    c = cg.Cgroups(mounts=cg.Mounts(v2=str(tmp_path / "absent")), pods={})
    assert c.name(cg.V2, 12345) == "cgroup:12345"
    assert c.name(cg.V2, 0) == "-"
    assert cg.sock_memory_all(cg.Mounts()) == []


def _framed(*events):
    from tracer.model import events as ev
    return ev.frame_all([e.pack() for e in events]), len(events)


def test_recorded_ids_are_the_ones_the_records_carry(hybrid):
    """A capture notes the cgroup ids of raw records (no decoding) and writes the
    names of the new ones into a cgroups block, once."""
    from tracer.capture.cgroup_ids import CgroupIds
    from tracer.model import events as ev
    _, m = hybrid
    svc = os.stat(os.path.join(m.v2, "system.slice/nginx.service")).st_ino
    mem = os.stat(os.path.join(m.v1_memory, "system.slice/nginx.service")).st_ino
    ids = CgroupIds(cg.Cgroups(mounts=m, pods={}))
    payload, n = _framed(ev.Event.make(owner_cgroup=svc, memcg=mem, owner_fidelity=2),
                         ev.Event.make(owner_cgroup=svc, owner_fidelity=2))
    ids.note(payload, n)
    block = ids.block()
    assert block["ids"]["v2"][str(svc)]["label"] == "nginx.service"
    assert block["ids"]["memory"][str(mem)]["path"] == "/system.slice/nginx.service"
    ids.note(payload, n)
    assert ids.block() is None


def test_cgroup_and_container_filters_match_the_owner(hybrid):
    from tracer.capture import who
    from tracer.kernel.loader import Filters
    from tracer.model import events as ev
    _, m = hybrid
    names = cg.Cgroups(mounts=m, pods={})
    svc = os.stat(os.path.join(m.v2, "system.slice/nginx.service")).st_ino
    dock = os.stat(os.path.join(m.v2, "system.slice/docker-%s.scope" % CID)).st_ino
    e_svc = ev.Event.make(owner_cgroup=svc, owner_fidelity=2)
    e_dock = ev.Event.make(owner_cgroup=dock, owner_fidelity=2)
    assert who.predicate(Filters(), names) is None
    by_path = who.predicate(Filters(cgroup="/system.slice/nginx.service"), names)
    assert by_path(e_svc) and not by_path(e_dock)
    assert who.predicate(Filters(cgroup="system.slice"), names)(e_dock)
    by_id = who.predicate(Filters(container=CID[:12]), names)
    assert by_id(e_dock) and not by_id(e_svc)
    payload, n = _framed(e_svc, e_dock, e_dock)
    kept, k = who.only(payload, n, by_id)
    assert k == 2 and ev.Event.decode(kept, ev.at(1)).owner_cgroup == dock


def _node(tmp_path):
    """A node's runtime files: a Docker container, a Podman one, a kubelet log link."""
    root = tmp_path / "node"
    _write(str(root / "var/lib/docker/containers" / CID / "config.v2.json"),
           '{"ID": "%s", "Name": "/web", "Config": {}}' % CID)
    _write(str(root / "var/lib/containers/storage/overlay-containers/containers.json"),
           '[{"id": "%s", "names": ["db"]}, {"id": "x"}]' % CID2)
    logs = root / "var/log/containers"
    os.makedirs(logs)
    os.symlink("/var/log/pods/x/nginx/0.log", logs / ("cart-7d9f_shop_nginx-%s.log" % CID2))
    return str(root)


def test_container_names_from_docker_podman_and_the_kubelet(tmp_path):
    from tracer.host.container_names import ContainerNames
    names = ContainerNames(root=_node(tmp_path))
    assert names.name("docker", CID) == "web"
    assert names.name("podman", CID2) == "db"
    assert names.name("containerd", CID2, in_pod=True) == "nginx"
    assert names.name("docker", CID2) is None and names.name("crio", CID) is None
    assert names.name("docker", None) is None
    # broken files read as no name, never an error
    _write(str(tmp_path / "bad/var/lib/docker/containers" / CID / "config.v2.json"), "{not json")
    assert ContainerNames(root=str(tmp_path / "bad")).name("docker", CID) is None


def test_a_named_container_is_labelled_and_matched_by_its_name(hybrid, tmp_path):
    from tracer.host.container_names import ContainerNames
    _, m = hybrid
    here = cg.Cgroups(mounts=m, pods={UID: "shop/cart-7d9f"}, names=ContainerNames(root=_node(tmp_path)))
    ino = os.stat(os.path.join(m.v2, "system.slice/docker-%s.scope" % CID)).st_ino
    assert here.name(cg.V2, ino) == "docker:web"
    ident = here.identity(cg.V2, ino)
    assert ident["container"] == CID and ident["name"] == "web"      # the id stays in the record
    assert cg.Identity.from_json(ident).matches("web")
    pod = [p for p in ("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/"
                       "cri-containerd-%s.scope" % (UID.replace("-", "_"), CID2),)][0]
    ino = os.stat(os.path.join(m.v2, pod)).st_ino
    assert here.name(cg.V2, ino) == "shop/cart-7d9f/nginx"


def test_v2_sock_memory_reads_memory_events(tmp_path):
    """Pure v2 (the guests of tests/test_vm_memcg_v2.py): sock from memory.stat,
    memory.max, and memory.events max/oom/oom_kill."""
    d = tmp_path / "app.slice"
    _write(str(d / "memory.stat"), "anon 4096\nsock 21008384\nshmem 0\n")
    _write(str(d / "memory.max"), "11902976\n")
    _write(str(d / "memory.high"), "max\n")
    _write(str(d / "memory.current"), "32133120\n")
    _write(str(d / "memory.events"), "low 0\nhigh 0\nmax 321\noom 2\noom_kill 0\noom_group_kill 0\n")
    sm = cg.sock_memory(str(tmp_path), "/app.slice", "v2")
    assert (sm.sock, sm.limit, sm.high, sm.usage) == (21008384, 11902976, None, 32133120)
    assert (sm.max_events, sm.oom_events, sm.oom_kills) == (321, 2, 0)
    assert sm.limit_name == "memory.max" and sm.percent > 100
