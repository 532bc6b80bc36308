"""setuptools' one step beyond pyproject.toml: the bcc engine's C text and the
headers it includes are kept in bpf/ only, and join the package's
tracer/kernel/bpfobj/ as it is built (a wheel, `pip install .`), so an
installed tcpoom compiles the text it was built with (tracer/kernel/objects.py).
The sdist carries bpf/'s text (MANIFEST.in) for the wheel built from it."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from tracer.kernel import objects  # noqa: E402  (standard library only)


class BuildPy(build_py):
    def run(self):
        super().run()
        objects.ship_bcc_text(os.path.join(ROOT, "bpf"),
                              os.path.join(self.build_lib, "tracer", "kernel", "bpfobj"))


setup(cmdclass={"build_py": BuildPy})
