"""Writing files so that a reader never sees half of one (avatars, weights, checkpoints)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FILE_MODE = 0o644


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yields a temp path next to ``path``; it is fsynced and renamed onto ``path`` only if the
    block succeeds, and removed otherwise."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600: others (a web server) must read the file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
