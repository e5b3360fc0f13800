"""Run a real livedh server inside a private network namespace, for end-to-end tests/bench."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livedh.testing.netns import in_namespace, network_namespace

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class LiveServer:
    namespace: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def run_python(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `python ARGS` inside the namespace (where the server's address is reachable)."""
        return subprocess.run(
            in_namespace(self.namespace, [sys.executable, *args]),
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )

    def probe(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        done = self.run_python(["-m", "livedh.testing.probe", self.url, *args], timeout=timeout)
        if not done.stdout.strip():
            raise AssertionError(f"probe failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def get(self, path: str, method: str = "GET", body: object = None, raw: str | None = None,
            content_type: str = "application/json") -> tuple[int, Any]:
        code = (
            "import json,sys,urllib.request as u\n"
            "req=u.Request(sys.argv[1],method=sys.argv[2],data=sys.argv[3].encode() if sys.argv[3] else None,"
            "headers={'Content-Type':sys.argv[4]})\n"
            "try:\n r=u.urlopen(req,timeout=30); print(r.status); print(r.read().decode())\n"
            "except u.HTTPError as e:\n print(e.code); print(e.read().decode())\n"
        )
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        done = self.run_python(["-c", code, self.url + path, method, data, content_type])
        status, _, text = done.stdout.partition("\n")
        if not status.strip():
            raise AssertionError(done.stderr[-2000:])
        return int(status), json.loads(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(tmp_dir: Path, *extra_args: str) -> Iterator[LiveServer]:
    port = _free_port()
    log_path = tmp_dir / "server.log"
    with network_namespace() as ns, open(log_path, "wb") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            in_namespace(ns, [sys.executable, "-m", "livedh.cli", "serve", "--host", "127.0.0.1",
                              "--port", str(port), *extra_args]),
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )
        server = LiveServer(ns, f"http://127.0.0.1:{port}", process, log_path)
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: {server.log()[-3000:]}")
                try:
                    status, _ = server.get("/api/v1/health")
                    if status == 200:
                        break
                except (AssertionError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {server.log()[-3000:]}")
                time.sleep(0.5)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
