"""ctypes bindings to the system libbpf (libbpf.so.1, 1.0 or newer).

Only what the loader, the probe plan and the layout check need (BTF is read
through them in btf.py). No compiler, no
LLVM and no kernel headers are involved: the BPF objects are built ahead of time
and relocated by libbpf (CO-RE) against the running kernel's BTF.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Iterator, List, Optional

from tracer.errors import TcpoomError


class LibbpfError(TcpoomError):
    """libbpf is missing or refused something."""


class ObjectOpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts of libbpf 1.x, up to btf_custom_path (libbpf
    reads only the first `sz` bytes)."""
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("_attach_prog_fd", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p)]


_lib = None
_lock = threading.Lock()
_log: List[str] = []
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


_LIBBPF_DEBUG = 2
_DEBUG = bool(os.environ.get("TCPOOM_LIBBPF_DEBUG"))     # read once: libbpf prints ~1000 times a load
_print_buf = ctypes.create_string_buffer(1 << 18)   # verifier logs come as one message


def _printer(level: int, fmt: bytes, args: int) -> int:
    # libbpf prints through a printf-style callback with a va_list; let libc
    # format it and keep the lines, so a refused load can be explained. Its
    # debug level (a thousand CO-RE lines a load, ~10 ms of start-up) is kept
    # only when asked for: the refusals and verifier logs come as warnings.
    debug = _DEBUG
    if level >= _LIBBPF_DEBUG and not debug:
        return 0
    buf = _print_buf
    _libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
    text = buf.value.decode(errors="replace")
    _log.append(text)
    if len(_log) > 4000:
        del _log[:2000]
    if debug:
        os.write(2, buf.value)
    return 0


_print_cb = _PRINT_FN(_printer)
# ctypes.util.find_library would spawn ldconfig: name the sonames directly
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with prototypes set. Raises LibbpfError when absent."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        l = None
        for name in ("libbpf.so.1", "libbpf.so"):
            try:
                l = ctypes.CDLL(name, use_errno=True)
                break
            except OSError:
                continue
        if l is None:
            raise LibbpfError("libbpf.so.1 not found: install libbpf1 (Debian/Ubuntu) or libbpf (RHEL)")
        vp, cp, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        protos = {
            "libbpf_set_print": (vp, [_PRINT_FN]),
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (i, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__next_program": (vp, [vp, vp]),
            "bpf_object__next_map": (vp, [vp, vp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_object__btf": (vp, [vp]),
            "bpf_program__name": (cp, [vp]),
            "bpf_program__section_name": (cp, [vp]),
            "bpf_program__set_autoload": (i, [vp, ctypes.c_bool]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_program__fd": (i, [vp]),
            "bpf_link__destroy": (i, [vp]),
            "bpf_link__fd": (i, [vp]),
            "bpf_map__name": (cp, [vp]),
            "bpf_map__fd": (i, [vp]),
            "bpf_map__is_internal": (ctypes.c_bool, [vp]),
            "bpf_map__set_max_entries": (i, [vp, u32]),
            "bpf_map__reuse_fd": (i, [vp, i]),
            "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(ctypes.c_size_t)]),
            "bpf_map__value_size": (u32, [vp]),
            "bpf_map_lookup_elem": (i, [i, vp, vp]),
            "bpf_map_get_next_key": (i, [i, vp, vp]),
            "bpf_map_delete_elem": (i, [i, vp]),
            "libbpf_num_possible_cpus": (i, []),
            "btf__load_vmlinux_btf": (vp, []),
            "btf__parse": (vp, [cp, vp]),
            "btf__free": (None, [vp]),
            "btf__find_by_name_kind": (i, [vp, cp, u32]),
            "btf__type_by_id": (vp, [vp, u32]),        # const struct btf_type *: btf.py reads it
            "btf__name_by_offset": (cp, [vp, u32]),
            "btf__type_cnt": (u32, []),
        }
        for fname, (res, args) in protos.items():
            f = getattr(l, fname)
            f.restype = res
            f.argtypes = args
        l.btf__type_cnt.argtypes = [vp]
        l.libbpf_set_print(_print_cb)
        _lib = l
        return l


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf 0.7+)."""
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


def test_run(prog_fd: int) -> Optional[int]:
    """Run a loaded program once (BPF_PROG_TEST_RUN, no context): its return
    value, or None where libbpf or the kernel cannot (raw_tp: kernel 5.10+)."""
    l = lib()
    fn = getattr(l, "bpf_prog_test_run_opts", None)
    if fn is None:
        return None
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_void_p]
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    if fn(prog_fd, ctypes.byref(opts)) != 0:
        return None
    return opts.retval


def quiet(on: bool) -> None:
    """No printer at all (on), or ours back. For a load on a second thread."""
    lib().libbpf_set_print(_PRINT_FN() if on else _print_cb)


def log_tail(n: int = 12) -> str:
    """The last lines libbpf printed (the verifier's complaint, usually)."""
    lines = "".join(_log).splitlines()
    return "\n".join(lines[-n:])


def clear_log() -> None:
    del _log[:]


def last_errno(default: int = errno.EINVAL) -> int:
    return ctypes.get_errno() or default


# ----------------------------------------------------------- raw bpf(2) probes

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_FENTRY = 24


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint8 * 64),
    ]


def try_load_fentry(btf_func_id: int) -> int:
    """Load (never attach) a two-instruction fentry program on a kernel function.

    Returns 0 when the kernel accepts it, else the errno (EPERM on kernels that
    refuse tracing programs, EINVAL/ENOTSUPP where fentry is not supported)."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000B7, 0x0000000000000095)  # r0 = 0; exit
    license = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr()
    attr.prog_type = _BPF_PROG_TYPE_TRACING
    attr.expected_attach_type = _BPF_TRACE_FENTRY
    attr.insn_cnt = 2
    attr.insns = ctypes.addressof(insns)
    attr.license = ctypes.addressof(license)
    attr.attach_btf_id = btf_func_id
    attr.prog_name = b"tcpoom_probe"
    fd = _libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        return ctypes.get_errno() or errno.EINVAL
    os.close(fd)
    return 0


def iter_programs(obj: int) -> Iterator[int]:
    l, p = lib(), None
    while True:
        p = l.bpf_object__next_program(obj, p)
        if not p:
            return
        yield p


def iter_maps(obj: int) -> Iterator[int]:
    l, m = lib(), None
    while True:
        m = l.bpf_object__next_map(obj, m)
        if not m:
            return
        yield m
