"""Pick and load the lip-sync model an avatar uses."""

from __future__ import annotations

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
        model = PhotoLipSync.from_dir(folder)
        if model.mouth_box is None:
            from livedh.avatar.format import load_manifest

            model.mouth_box = load_manifest(folder).mouth_box
        return model
    raise InvalidInputError(f"unknown lip-sync model {config.model!r}; choose one of {MODELS}")
