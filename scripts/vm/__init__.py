"""A small VM runner: stock Debian kernels under qemu (TCG), this machine's root
filesystem shared read-only over 9p, one command per boot.

    from scripts.vm import run_in_vm
    code, output = run_in_vm(["python3", "-m", "tracer", "probes"], kernel="6.12")

    python3 -m scripts.vm --kernel 6.1 -- python3 -m tracer probes
"""
from .errors import VMError, VMTimeout
from .kernels import SERIES, Kernel, get_kernel
from .runner import VMResult, run_in_vm

__all__ = ["run_in_vm", "VMResult", "VMError", "VMTimeout", "get_kernel", "Kernel", "SERIES"]
