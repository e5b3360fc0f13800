"""Avatar builds requested over HTTP, run as background jobs.

Each build runs ``livedh avatar build --progress json`` in a child process at a lower CPU
priority: building is minutes of CPU-heavy decoding and face tracking, and in a process of its
own it can neither stall the event loop (GIL) nor take the streaming sessions down if it fails.
The child prints one JSON object per line; the job keeps the latest step and counts for
``GET /api/v1/avatars/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livedh.config import AvatarBuildConfig
from livedh.errors import ConflictError, NotFoundError, RateLimitedError
from livedh.logs import log_event

log = logging.getLogger("livedh.avatars")

UPLOADS_DIR = ".uploads"
# finished jobs kept for GET; older ones are forgotten
_KEEP_FINISHED = 50
_STDERR_LINES = 20


@dataclass
class AvatarJob:
    id: str
    name: str
    video: Path
    #: the uploaded file's own name, for the avatar's manifest
    filename: str = ""
    state: str = "queued"  # queued | running | done | failed | cancelled
    step: str | None = None
    done: int = 0
    total: int = 0
    error: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "step": self.step,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "summary": self.summary,
            "created": self.created,
            "finished": self.finished,
        }


class AvatarJobs:
    """Owns the build jobs and their tasks; ``aclose()`` cancels and awaits them (idempotent)."""

    def __init__(self, avatars_dir: Path, config: AvatarBuildConfig, fps: int) -> None:
        self.avatars_dir = Path(avatars_dir)
        self.config = config
        self.fps = fps
        self._jobs: dict[str, AvatarJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.max_parallel)
        self._closed = False

    @property
    def uploads_dir(self) -> Path:
        return self.avatars_dir / UPLOADS_DIR

    def new_upload_path(self, suffix: str) -> Path:
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        return self.uploads_dir / f"{secrets.token_hex(8)}{suffix}"

    def all(self) -> list[AvatarJob]:
        return sorted(self._jobs.values(), key=lambda j: j.created)

    def get(self, job_id: str) -> AvatarJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no avatar build job {job_id!r}")
        return job

    def check_room(self) -> None:
        """Raises RateLimitedError (429) when ``max_queued`` builds are queued or running: each
        is minutes of CPU, and an unbounded queue is a queue of uploads on disk."""
        active = sum(1 for j in self._jobs.values() if j.active)
        if active >= self.config.max_queued:
            raise RateLimitedError(
                f"{active} avatar builds are queued or running (the limit is "
                f"{self.config.max_queued}); try again when one has finished",
                retry_after=60.0,
            )

    def submit(self, name: str, video: Path, filename: str = "") -> AvatarJob:
        """Queues a build of ``video`` (an upload this object now owns and deletes when done)."""
        if any(j.active and j.name == name for j in self._jobs.values()):
            raise ConflictError(f"avatar {name!r} is already being built")
        self.check_room()
        job = AvatarJob(id=secrets.token_hex(6), name=name, video=Path(video), filename=filename)
        self._jobs[job.id] = job
        self._forget_old()
        self._tasks[job.id] = asyncio.create_task(self._run(job), name=f"avatar-build-{job.id}")
        log_event(log, "avatar_build_queued", job=job.id, avatar=name)
        return job

    async def cancel(self, job_id: str) -> AvatarJob:
        job = self.get(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return job

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def command(self, job: AvatarJob) -> list[str]:
        c = self.config
        return [
            sys.executable, "-m", "livedh.cli", "avatar", "build", str(job.video),
            "--name", job.name,
            "--avatars-dir", str(self.avatars_dir),
            "--fps", str(self.fps),
            "--max-side", str(c.max_side),
            "--min-seconds", str(c.min_seconds),
            "--max-seconds", str(c.max_seconds),
            "--max-input-pixels", str(c.max_input_pixels),
            "--max-frames", str(c.max_frames),
            "--model", c.model,
            "--progress", "json",
            "--source", f"uploaded video {job.filename or job.video.name}",
        ]  # fmt: skip

    async def _run(self, job: AvatarJob) -> None:
        process: asyncio.subprocess.Process | None = None
        stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        # the outcome the child reported; the job shows it only once the child is gone and the
        # upload deleted, so "done" means everything is finished
        outcome: dict[str, Any] = {}
        state, error = "failed", None
        try:
            async with self._slots:
                job.state = "running"
                log_event(log, "avatar_build_started", job=job.id, avatar=job.name)
                process = await asyncio.create_subprocess_exec(
                    *self.command(job),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    # below the streaming sessions: a build must never make them stutter
                    preexec_fn=lambda: os.nice(self.config.nice),
                )
                assert process.stdout is not None and process.stderr is not None
                await asyncio.gather(
                    self._read_progress(job, process.stdout, outcome),
                    _tail(process.stderr, stderr_tail),
                )
                code = await process.wait()
            if "error" in outcome:
                error = outcome["error"]
            elif outcome.get("done") and code == 0:
                state = "done"
                job.summary = outcome.get("summary")
            else:  # no final line: the child died
                error = {
                    "code": "build_crashed",
                    "msg": f"the build process exited with code {code}",
                    "log": list(stderr_tail),
                }
        except asyncio.CancelledError:
            state = "cancelled"
            raise
        except Exception as exc:  # a job failing must not take the server down
            log.exception("event=avatar_build_error job=%s", job.id)
            # the details (paths, perhaps) stay in the server log
            error = {"code": "internal_error", "msg": f"the build failed ({type(exc).__name__}); "
                     "see the server log"}
        finally:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            job.video.unlink(missing_ok=True)
            if process is not None:
                # a killed or failed child leaves its work folder and lock (resumable for the
                # CLI, but an upload is never built again); the child is gone, so clean here
                await self._discard_unfinished(job)
            job.error = error
            job.finished = time.time()
            job.state = state
            self._tasks.pop(job.id, None)
            log_event(
                log, "avatar_build_finished", job=job.id, avatar=job.name, state=job.state,
                error=(job.error or {}).get("msg"),
            )  # fmt: skip

    async def _discard_unfinished(self, job: AvatarJob) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _discard_unfinished, self.avatars_dir, job.name)
        except Exception:  # cleaning up must not hide the job's outcome
            log.exception("event=avatar_build_cleanup_error job=%s", job.id)

    async def _read_progress(
        self, job: AvatarJob, stream: asyncio.StreamReader, outcome: dict[str, Any]
    ) -> None:
        async for raw in stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # stray output from a library: not ours
            if not isinstance(event, dict):
                continue
            if "error" in event:
                outcome["error"] = {"code": event.get("code", "invalid_input"), "msg": str(event["error"])}
            elif event.get("done") is True:
                outcome.update(done=True, summary=event.get("summary"))
            elif "step" in event:
                job.step = str(event["step"])
                job.done = int(event.get("done", 0))
                job.total = int(event.get("total", 0))

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in sorted(finished, key=lambda j: j.created)[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[job.id]


async def _tail(stream: asyncio.StreamReader, lines: deque[str]) -> None:
    async for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip())


def _discard_unfinished(avatars_dir: Path, name: str) -> None:
    from livedh.avatar.build import discard_unfinished  # cv2 and friends: not at server import

    discard_unfinished(avatars_dir, name)


def remove_uploads(avatars_dir: Path) -> None:
    """Uploads left by a server that stopped mid-build: nothing will ever build them."""
    shutil.rmtree(Path(avatars_dir) / UPLOADS_DIR, ignore_errors=True)
