import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data")


def pytest_collection_modifyitems(config, items):
    # Kernel tests need root; elsewhere they are skipped (and .ci/run fails
    # when they were skipped: on this project's machines they can always run).
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel test: needs root")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


_skipped_kernel = []


def pytest_runtest_logreport(report):
    if report.skipped and "kernel" in report.keywords:
        _skipped_kernel.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    # scripts/test and CI set this: a run whose kernel tests were skipped has
    # not tested the product and must not pass
    if os.environ.get("TCPOOM_REQUIRE_KERNEL") == "1" and _skipped_kernel:
        print(f"\nFAIL: {len(_skipped_kernel)} kernel tests were skipped: {_skipped_kernel[:3]}")
        session.exitstatus = 1


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true",
                     help="rewrite the golden report texts in tests/data/ from the sample trace")
