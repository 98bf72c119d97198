"""Process-wide settings for long CPU training runs.

A training step allocates and frees several tensors of 5-25 MB (graph layers, their gradients, the
all-item scores). With glibc's default thresholds much of that memory goes back to the kernel
between steps and is faulted in again page by page on the next one, which costs a LightGCN step
about as much as its arithmetic (figures: BENCHMARKS.md, "Measurements behind code choices";
tests/test_runtime.py checks the effect on real steps). Called by the trainer and the
benchmarks, never on import: it changes the allocator for the whole process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
_TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed large blocks instead of unmapping them; True if it took effect.
    A no-op (False) off Linux or with another C library."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done


def wait_policy_warning(threads: int) -> str | None:
    """A warning when OMP_WAIT_POLICY=PASSIVE is set and training uses several threads, else None.

    PASSIVE puts OpenMP's idle threads to sleep at once, and a training step is hundreds of small
    parallel regions, each of which then waits for its threads to wake: about a third slower with
    2 threads (BENCHMARKS.md, "OpenMP waiting"). It is
    harmless with one thread, the right setting for several single-threaded runs side by side.
    """
    if threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return (f"OMP_WAIT_POLICY=PASSIVE slows training with {threads} threads by about a third; "
                "unset it, or use --threads 1 when several runs share the machine")
    return None


def resolve_device(spec: str):
    """torch.device for a config's `device` ("auto", "cpu", "cuda", "cuda:N"), or a one-line
    error when the machine has no such device."""
    import torch

    from gsau.errors import GsauError
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = str(spec).partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise GsauError(f"device {spec}: expected auto, cpu, cuda or cuda:N")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GsauError(f"device {spec}: no CUDA device is available here (torch {torch.__version__}, "
                            f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GsauError(f"device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
