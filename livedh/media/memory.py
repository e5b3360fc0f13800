"""Give freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_heap() -> bool:
    """glibc keeps freed memory of many short-lived buffers (frames, PCM, tensors) in its heaps;
    after a session or an utterance ends, hand it back so RSS follows real use. Blocking for a few
    ms: call it from a worker thread. Returns False where malloc_trim does not exist."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
