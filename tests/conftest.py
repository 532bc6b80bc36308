import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data")

import matrix_results  # noqa: E402  (tests/ is on sys.path under pytest)


NEEDS = ("kernel", "vm", "browser", "integration")   # what a test needs besides Python; none: `unit`


@pytest.hookimpl(tryfirst=True)     # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(m) for m in NEEDS):
            item.add_marker(pytest.mark.unit)
    # the bcc guest's tests last: it boots at the start (pytest_collection_finish)
    # and is the longest thing in the suite; everything else runs meanwhile
    items.sort(key=lambda item: item.nodeid.split("::")[0].endswith("test_vm_bcc.py"))
    # Kernel and VM tests need root; elsewhere they are skipped (and .ci/run fails
    # when they were skipped: on this project's machines they can always run).
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel or vm test: needs root")
    for item in items:
        if item.get_closest_marker("kernel") or item.get_closest_marker("vm"):
            item.add_marker(skip)


_early_guest = None


def pytest_collection_finish(session):
    # the bcc guest spends ~8 minutes on one core: boot it before the first
    # test rather than when its tests come up (tests/test_vm_bcc.py)
    global _early_guest
    if os.geteuid() != 0 or session.config.option.collectonly:
        return
    _early_guest = next((item.module for item in session.items
                         if "guest" in getattr(item, "fixturenames", ())
                         and item.module.__name__.endswith("test_vm_bcc")), None)
    if _early_guest is not None:
        _early_guest.start_early()


_skipped_kernel = []


def pytest_runtest_logreport(report):
    if report.skipped and ("kernel" in report.keywords or "vm" in report.keywords):
        _skipped_kernel.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _early_guest is not None:
        _early_guest.stop_early()
    # scripts/test and CI set this: a run whose kernel tests were skipped has
    # not tested the product and must not pass
    if os.environ.get("TCPOOM_REQUIRE_KERNEL") == "1" and _skipped_kernel:
        print(f"\nFAIL: {len(_skipped_kernel)} kernel tests were skipped: {_skipped_kernel[:3]}")
        session.exitstatus = 1


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true",
                     help="rewrite the golden report texts in tests/data/ from the sample trace")


def pytest_configure(config):
    matrix_results.session_args = list(config.args)


@pytest.fixture
def matrix(request):
    """Records what this test verified, for docs/kernel-matrix.md (see tests/matrix_results.py)."""
    return matrix_results.Recorder(request.node.nodeid)


@pytest.fixture(scope="session")
def probes_plan():
    """The probe plan `tcpoom probes --json` reports on this machine."""
    out = subprocess.run([sys.executable, "-m", "tracer", "probes", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plan"]
    matrix_results.Recorder("tcpoom probes --json").claims(plan)
    return plan
