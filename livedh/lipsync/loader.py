"""Pick and load the lip-sync model an avatar uses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2

from livedh.config import AppConfig
from livedh.errors import InvalidInputError, ModelFileError, NotFoundError
from livedh.lipsync.base import LipSyncModel
from livedh.lipsync.generator import FaceGenerator

MODELS = ("photo", "wav2lip", "wav2lip256", "ultralight")
AUTO = "auto"


def resolve_model(config: AppConfig) -> str:
    """``config.model``, or for ``auto`` the model the avatar was built (and trained) for: a
    freshly built and trained avatar streams with ``--avatar NAME`` alone. Reads the manifest."""
    if config.model != AUTO:
        return config.model
    from livedh.avatar.format import load_manifest

    folder = config.avatars_dir / config.avatar
    if config.avatar == "default" and not (folder / "avatar.json").is_file():
        return "photo"  # built on first use
    return load_manifest(folder).model


def load_lipsync_model(config: AppConfig) -> LipSyncModel:
    """Blocking (reads files, may build the default avatar): call from a worker thread."""
    # Sessions run in parallel already; OpenCV's own thread pool would only fight them for the
    # cores (and break the one-core-per-renderer budget).
    cv2.setNumThreads(1)
    if config.model == AUTO:
        config = replace(config, model=resolve_model(config))
    if config.model not in MODELS:
        raise InvalidInputError(f"unknown lip-sync model {config.model!r}; choose one of {(AUTO, *MODELS)}")
    if config.model == "photo":
        from livedh.avatar.photo import ensure_default_avatar
        from livedh.lipsync.photo import PhotoLipSync

        if config.avatar == "default":
            folder = ensure_default_avatar(config.avatars_dir)
        else:
            folder = config.avatars_dir / config.avatar
        return PhotoLipSync.from_dir(folder)

    from livedh.avatar.format import load_manifest
    from livedh.lipsync.neural import NeuralLipSync

    folder = config.avatars_dir / config.avatar
    manifest = load_manifest(folder)
    family = "ultralight" if config.model == "ultralight" else "wav2lip"
    if manifest.kind != "video" or not manifest.model.startswith(family):
        raise InvalidInputError(
            f"avatar {config.avatar!r} is a {manifest.kind} avatar built for {manifest.model!r}; "
            f"--model {config.model} needs a video avatar built for {family}"
        )
    return NeuralLipSync.from_dir(folder, build_generator(config, folder))


def build_generator(config: AppConfig, avatar_dir: Path) -> FaceGenerator:
    from livedh.lipsync.checkpoints import load_ultralight, load_wav2lip
    from livedh.lipsync.generators import UltralightGenerator, Wav2LipGenerator
    from livedh.lipsync.runtime import RuntimeConfig, make_runtime

    settings = config.lipsync
    runtime_config = RuntimeConfig(kind=settings.runtime, device=settings.device)  # type: ignore[arg-type]
    variant = "256" if config.model == "wav2lip256" else "96"
    if settings.runtime == "onnx":
        if settings.onnx is None or not settings.onnx.is_file():
            raise NotFoundError(
                f"the onnx runtime needs an exported model (--onnx): {settings.onnx} not found; "
                "make one with `livedh model export`"
            )
        runtime = make_runtime(runtime_config, onnx_path=settings.onnx)
    elif config.model == "ultralight":
        weights = settings.weights or avatar_dir / "weights" / "ultralight.pth"
        if settings.weights is None and not weights.is_file():
            raise ModelFileError(
                f"avatar {avatar_dir.name!r} has no trained Ultralight model ({weights} is missing): "
                f"train it with `livedh avatar train {avatar_dir.name}`"
            )
        ultralight = load_ultralight(weights, device=settings.device)
        runtime = make_runtime(runtime_config, module=ultralight)
    else:
        default_name = "wav2lip256.pth" if variant == "256" else "wav2lip.pth"
        weights = settings.weights or config.models_dir / default_name
        wav2lip = load_wav2lip(weights, variant, device=settings.device)  # type: ignore[arg-type]
        runtime = make_runtime(runtime_config, module=wav2lip)
    fps = config.session.fps
    if config.model == "ultralight":
        return UltralightGenerator(runtime, fps=fps)
    return Wav2LipGenerator(runtime, size=int(variant), fps=fps)
