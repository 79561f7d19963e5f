"""Which integer kernels ONNX Runtime's CPU provider picks on this CPU, and whether their sums can saturate.

ONNX Runtime (its MLAS library) chooses its uint8 x int8 GEMM at start-up from CPUID: AMX, AVX-512 VNNI or
AVX-VNNI add each product in 32 bits; AVX-512BW and AVX2 without VNNI use ``VPMADDUBSW``, whose pairs of
products saturate at 16 bits. A file with 8-bit weights can then give other answers than on the CPU that
checked it (see :mod:`cnnedge.export.saturation`). AVX2 and AVX-512 are read through numpy's own detection
(which also asks the OS whether it saves the wide registers); AVX-VNNI and AMX, which numpy does not list, from
the CPUID instruction itself, run from a few bytes of machine code. Both ask the CPU, not ``/proc/cpuinfo``, so an
emulated CPU (``qemu-x86_64 -cpu Haswell``) reports what it emulates.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Int8Kernels:
    """``name``: the instruction set of the uint8 x int8 kernels; ``exact``: whether their sums cannot saturate."""

    name: str
    exact: bool
    machine: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def _numpy_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore[no-redef]
    return dict(features)


# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]), System V x86-64: push rbx; mov eax, edi; mov ecx, esi;
# mov r8, rdx; cpuid; mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("5389f889f14989d00fa24189004189580441894808418950" "0c5bc3")


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int] | None:
    """EAX, EBX, ECX, EDX of CPUID ``leaf``/``subleaf``; None where code cannot be made executable here."""
    import ctypes
    import mmap

    try:
        mem = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        mem.write(_CPUID_CODE)
        buf = ctypes.c_char.from_buffer(mem)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(
            ctypes.addressof(buf))
        out = (ctypes.c_uint32 * 4)()
        fn(leaf, subleaf, out)
        del fn, buf
        return out[0], out[1], out[2], out[3]
    finally:
        mem.close()


@functools.lru_cache(maxsize=1)
def int8_kernels() -> Int8Kernels:
    """What this process's CPU gives ONNX Runtime's U8S8 kernels."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return Int8Kernels(f"{machine} (no 16-bit pair sums)", True, machine)
    f = _numpy_features()
    top = cpuid(0) if f.get("AVX2") and machine in ("x86_64", "amd64") else None
    leaf7 = cpuid(7, 0) if top and top[0] >= 7 else None
    leaf7_1 = cpuid(7, 1) if leaf7 and leaf7[0] >= 1 else None
    if f.get("AVX512F") and leaf7 and leaf7[3] >> 25 & 1:
        return Int8Kernels("AMX", True, machine)
    if f.get("AVX512VNNI"):
        return Int8Kernels("AVX-512 VNNI", True, machine)
    if leaf7_1 and leaf7_1[0] >> 4 & 1:
        return Int8Kernels("AVX-VNNI", True, machine)
    if f.get("AVX512BW"):
        return Int8Kernels("AVX-512BW without VNNI", False, machine)
    if f.get("AVX2"):
        return Int8Kernels("AVX2 without VNNI", False, machine)
    return Int8Kernels("SSE4.1", False, machine)
