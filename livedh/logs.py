"""Structured logging: one logfmt line per event, always with the session id when there is one."""

from __future__ import annotations

import logging
from typing import Any


def _fmt(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_event(
    logger: logging.Logger,
    event: str,
    session: int | str | None = None,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log ``event=... session=... k=v ...`` on one line."""
    parts = [f"event={event}"]
    if session is not None:
        parts.append(f"session={session}")
    parts.extend(f"{key}={_fmt(value)}" for key, value in fields.items())
    logger.log(level, " ".join(parts))


def configure_logging(level: str = "INFO") -> None:
    """Called by the CLI only (libraries never configure logging)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # aioice/aiortc are chatty at INFO about every candidate pair.
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
