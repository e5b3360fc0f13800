"""Worker-thread helpers."""

from __future__ import annotations

import os
import threading


def lower_thread_priority(niceness: int = 10) -> None:
    """Make the calling thread yield the CPU to others (Linux: threads have their own nice).

    For work that runs far faster than real time (speech synthesis, transcription): under load
    it should wait, not the frame-paced work (rendering, encoding, sending) that a viewer sees
    stutter. Used as a ThreadPoolExecutor initializer. A no-op where unsupported.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass
