"""Pick and load the lip-sync model an avatar uses."""

from __future__ import annotations

import cv2

from livedh.config import AppConfig
from livedh.errors import InvalidInputError
from livedh.lipsync.base import LipSyncModel

MODELS = ("photo",)


def load_lipsync_model(config: AppConfig) -> LipSyncModel:
    """Blocking (reads files, may build the default avatar): call from a worker thread."""
    if config.model == "photo":
        from livedh.avatar.photo import ensure_default_avatar
        from livedh.lipsync.photo import PhotoLipSync

        if config.avatar == "default":
            folder = ensure_default_avatar(config.avatars_dir)
        else:
            folder = config.avatars_dir / config.avatar
        # Sessions run in parallel already; OpenCV's own thread pool would only fight them
        # for the cores (and break the one-core-per-renderer budget).
        cv2.setNumThreads(1)
        return PhotoLipSync.from_dir(folder)
    raise InvalidInputError(f"unknown lip-sync model {config.model!r}; choose one of {MODELS}")
