"""A private network namespace with a veth pair, for WebRTC on one machine.

aioice drops loopback host candidates, so a WebRTC peer needs a non-loopback address. The
namespace gives the server and the client such addresses (10.77.x.1 and .2) that exist only
inside it: no traffic leaves it. Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def netns_available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def network_namespace(subnet: int | None = None) -> Iterator[str]:
    """Create a namespace with lo up and a veth pair; yields its name; deletes it after."""
    name = f"livedh-{uuid.uuid4().hex[:8]}"
    subnet = subnet if subnet is not None else 100 + (os.getpid() % 100)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        _ip("-n", name, "addr", "add", f"10.77.{subnet}.1/24", "dev", "va")
        _ip("-n", name, "addr", "add", f"10.77.{subnet}.2/24", "dev", "vb")
        _ip("-n", name, "link", "set", "va", "up")
        _ip("-n", name, "link", "set", "vb", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_namespace(name: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]
