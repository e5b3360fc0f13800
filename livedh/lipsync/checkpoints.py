"""Load face-network weights from files, with errors that say what is wrong and what to do.

Wav2Lip: the published checkpoints (``wav2lip.pth``, ``wav2lip_gan.pth``, LiveTalking's
``wav2lip256.pth``) are ``{"state_dict": {"module.<name>": tensor}, ...}`` (saved from
DataParallel); a bare state_dict is accepted too.

Ultralight: our own format, ``{"arch": "ultralight", "config": {...}, "state_dict": {...}}``;
a bare Ultralight/LiveTalking hubert or wenet state_dict is accepted too (its front-end is read
from the audio encoder's input width).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from livedh.errors import ModelFileError
from livedh.files import atomic_file
from livedh.lipsync.nets.ultralight import (
    ARCH as ULTRALIGHT_ARCH,
)
from livedh.lipsync.nets.ultralight import (
    AUDIO_SHAPES,
    Ultralight,
    UltralightConfig,
)
from livedh.lipsync.nets.wav2lip import VARIANTS, Wav2Lip, Wav2LipVariant

#: sha256 of known-good weight files by file name; a file of that name must match. Empty until
#: we pin published files (their hosting has moved more than once).
KNOWN_CHECKSUMS: dict[str, str] = {}

#: where each architecture's file goes under the models directory
DEFAULT_FILES: dict[str, str] = {
    "wav2lip": "models/wav2lip.pth",
    "wav2lip256": "models/wav2lip256.pth",
    "ultralight": "avatars/<avatar>/weights/ultralight.pth",
}

M = TypeVar("M", bound=nn.Module)
_CHUNK = 1 << 20
_LIST_AT_MOST = 5


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path | str, expected: str) -> None:
    """Raise ModelFileError unless the file's sha256 is ``expected`` (hex, any case)."""
    path = Path(path)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from exc
    if actual != expected.strip().lower():
        raise ModelFileError(
            f"{path} has sha256 {actual}, expected {expected.lower()}: the download is corrupt or "
            "a different file; download it again"
        )


def load_wav2lip(
    path: Path | str,
    variant: Wav2LipVariant = "96",
    device: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> Wav2Lip:
    """A Wav2Lip generator (eval mode, on ``device``) with the weights in ``path``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Wav2Lip variant {variant!r}; choose one of {VARIANTS}")
    path = Path(path)
    where = DEFAULT_FILES["wav2lip" if variant == "96" else "wav2lip256"]
    what = "Wav2Lip" if variant == "96" else "Wav2Lip-256"
    hint = (
        "download wav2lip.pth or wav2lip_gan.pth (Rudrabha/Wav2Lip)"
        if variant == "96"
        else "download LiveTalking's wav2lip256.pth"
    )
    _check_exists(path, what, f"{hint} and put it at {where}")
    _check_known_checksum(path, expected_sha256)
    state = _state_dict(_torch_load(path, what), path, what)
    state = {k.removeprefix("module."): v for k, v in state.items()}

    model = _on_meta(lambda: Wav2Lip(variant))
    problems = _mismatch(model, state)
    if problems:
        message = f"{path} does not match the {what} architecture: {problems}"
        other: Wav2LipVariant = "256" if variant == "96" else "96"
        if not _mismatch(_on_meta(lambda: Wav2Lip(other)), state):
            message += f". It is a Wav2Lip-{other} checkpoint: use variant {other!r}"
        elif variant == "256":
            message += (
                ". livedh's 256 layout is LiveTalking's wav2lip256 (wav2lip_v2); other 256/288/384 "
                "forks use different layouts and are not supported"
            )
        raise ModelFileError(message)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def load_ultralight(
    path: Path | str,
    device: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> Ultralight:
    """An Ultralight network (eval mode, on ``device``) from our checkpoint format, or from a bare
    Ultralight hubert/wenet state_dict."""
    path = Path(path)
    _check_exists(
        path,
        "Ultralight",
        "Ultralight weights are trained per avatar; train them for this avatar and put them at "
        f"{DEFAULT_FILES['ultralight']}",
    )
    _check_known_checksum(path, expected_sha256)
    obj = _torch_load(path, "Ultralight")
    if isinstance(obj, Mapping) and "arch" in obj:
        if obj["arch"] != ULTRALIGHT_ARCH:
            raise ModelFileError(f"{path} holds a {obj['arch']!r} network, not an Ultralight one")
        try:
            config = UltralightConfig.from_dict(dict(obj.get("config") or {}))
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path} has an invalid Ultralight config: {exc}") from exc
        state = _state_dict(obj, path, "Ultralight")
    else:
        state = _state_dict(obj, path, "Ultralight")
        config = _guess_ultralight_config(state, path)

    model = _on_meta(lambda: Ultralight(config))
    problems = _mismatch(model, state)
    if problems:
        raise ModelFileError(
            f"{path} does not match the Ultralight architecture "
            f"(audio_features={config.audio_features!r}, channels={config.channels}): {problems}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def ultralight_checkpoint(model: Ultralight) -> dict[str, Any]:
    """Our checkpoint format for an Ultralight network (tensors on CPU)."""
    return {
        "arch": ULTRALIGHT_ARCH,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_ultralight(model: Ultralight, path: Path | str) -> None:
    """Write ``model`` in our checkpoint format (loadable with ``load_ultralight``), atomically:
    a server loading it meanwhile never reads half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(ultralight_checkpoint(model), tmp)


def _on_meta(build: Callable[[], M]) -> M:
    # shapes without storage: no time spent on a random init the file then overwrites
    with torch.device("meta"):
        return build()


def _check_exists(path: Path, what: str, remedy: str) -> None:
    if not path.is_file():
        state = "is not a file" if path.exists() else "not found"
        raise ModelFileError(f"{what} weights {path} {state}: {remedy}")


def _check_known_checksum(path: Path, expected: str | None) -> None:
    expected = expected or KNOWN_CHECKSUMS.get(path.name)
    if expected:
        verify_checksum(path, expected)


def _torch_load(path: Path, what: str) -> Any:
    try:
        # CPU first: a mismatched file then never touches GPU memory
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelFileError(f"cannot read {what} weights {path}: {exc}") from exc
    except Exception as exc:  # pickle/zip errors of every kind: the file is not a torch save
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path} is not a PyTorch checkpoint that can be loaded safely (weights only): {reason}"
        ) from exc


def _state_dict(obj: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(f"{path} holds no {what} state_dict (a mapping of names to tensors)")
    # fp32 whatever was saved (fp16 files exist); runtimes pick their own precision
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """A short description of how ``state`` differs from ``model``'s; empty when it fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches (file vs model)", shapes)):
        if items:
            listed = ", ".join(items[:_LIST_AT_MOST])
            more = f" and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""
            parts.append(f"{len(items)} {label}: {listed}{more}")
    return "; ".join(parts)


def _guess_ultralight_config(state: Mapping[str, torch.Tensor], path: Path) -> UltralightConfig:
    first = state.get("audio_model.conv1.conv.0.weight")
    inc = state.get("inc.inconv.0.conv.6.weight")
    if first is None or inc is None:
        raise ModelFileError(
            f"{path} is neither a livedh Ultralight checkpoint (no 'arch') nor an Ultralight "
            "hubert/wenet state_dict"
        )
    cin = int(first.shape[1])
    modes = [m for m, shape in AUDIO_SHAPES.items() if m != "mel" and shape[0] == cin]
    if not modes:
        raise ModelFileError(f"{path}: an audio encoder taking {cin} channels is neither hubert nor wenet")
    c0 = int(inc.shape[0])
    channels = (c0, 2 * c0, 4 * c0, 8 * c0, 16 * c0)
    return UltralightConfig(audio_features=modes[0], channels=channels)
