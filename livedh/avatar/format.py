"""The avatar folder format (docs/avatars.md): a manifest, ``avatar.json``, plus data files.

Every write is atomic (temp file or temp folder, then rename), and a whole avatar is built in a
hidden temp folder that is renamed into place only once complete, so a crash never leaves a
half-written avatar that a later run would trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livedh.avatar.landmarks import NUM_LANDMARKS
from livedh.errors import InvalidInputError, NotFoundError
from livedh.files import atomic_file

#: version written; 2 added the optional ``motion`` entry (docs/avatars.md)
FORMAT_VERSION = 2
#: versions read: an avatar built before the motion graph keeps loading (plain loop, no motion)
READABLE_VERSIONS = (1, 2)
MANIFEST = "avatar.json"
KINDS = ("photo", "video")
MODELS = ("photo", "wav2lip", "ultralight")
#: files (or folders, ending in "/") an avatar of each kind must have
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "photo": ("image.png", "landmarks.npy"),
    "video": ("frames/", "landmarks.npy", "boxes.npy"),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# temp folders of crashed builds older than this are removed by the next build
_STALE_TEMP_S = 3600.0
_DIR_MODE = 0o755


@dataclass(frozen=True)
class AvatarManifest:
    """``avatar.json``. Geometry is in frame pixels of the avatar's own frames."""

    name: str
    kind: str
    model: str
    fps: int
    width: int
    height: int
    #: ``[x0, y0, x1, y1]`` (x1, y1 exclusive): where mouth motion shows in rendered frames
    mouth_box: tuple[int, int, int, int]
    #: where the footage comes from, for the people who see it
    source: str
    license: str
    #: ISO 8601, UTC
    created: str
    #: frames in ``frames/`` (1 for a photo)
    frame_count: int = 1
    #: what built it, "<builder>/<version>": a newer builder rebuilds what it owns
    builder: str = ""
    format_version: int = FORMAT_VERSION
    #: the motion graph's entry (format 2): ``{"version": int, "actions": {name: [start, end]},
    #: "source_frames": int}``; None: no motion graph, the renderer loops the footage
    motion: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mouth_box"] = list(self.mouth_box)
        if self.motion is None:
            del data["motion"]  # absent and null mean the same; v1 readers never see the key
        return data

    @classmethod
    def from_json(cls, data: object, *, where: str = MANIFEST) -> AvatarManifest:
        """Validates ``data`` (parsed JSON); errors name ``where``."""

        def bad(msg: str) -> InvalidInputError:
            return InvalidInputError(f"{where}: {msg}")

        if not isinstance(data, dict):
            raise bad("expected a JSON object")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise bad(
                f"unsupported format_version {version!r} (this livedh reads {READABLE_VERSIONS})"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise bad(f"unknown keys {sorted(unknown)}")
        required = ("name", "kind", "model", "fps", "width", "height", "mouth_box", "source")
        for key in (*required, "license", "created"):
            if key not in data:
                raise bad(f"missing key {key!r}")
        for key in ("name", "kind", "model", "source", "license", "created", "builder"):
            if key in data and not isinstance(data[key], str):
                raise bad(f"{key} must be a string")
        for key in ("fps", "width", "height", "frame_count"):
            value = data.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{key} must be a positive integer, got {value!r}")
        if not _NAME_RE.match(data["name"]):
            raise bad(f"name {data['name']!r} must match {_NAME_RE.pattern}")
        if data["kind"] not in KINDS:
            raise bad(f"kind must be one of {KINDS}, got {data['kind']!r}")
        if data["model"] not in MODELS:
            raise bad(f"model must be one of {MODELS}, got {data['model']!r}")
        box = data["mouth_box"]
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        ):
            raise bad(f"mouth_box must be [x0, y0, x1, y1] integers, got {box!r}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= data["width"] and 0 <= y0 < y1 <= data["height"]):
            raise bad(
                f"mouth_box {box} is empty or outside the {data['width']}x{data['height']} frame"
            )
        motion = data.get("motion")
        if motion is not None:
            if version < 2:
                raise bad("motion needs format_version 2")
            _check_motion(motion, data.get("frame_count", 1), bad)
        return cls(**{**data, "mouth_box": (x0, y0, x1, y1)})


def _check_motion(entry: object, frame_count: int, bad: Callable[[str], InvalidInputError]) -> None:
    """The manifest's ``motion`` object: a version, the named action clips inside the footage and,
    optionally, how many frames come from the avatar's own video (the rest are action videos)."""
    from livedh.avatar.motion import parse_actions  # the motion module pulls in scipy

    if not isinstance(entry, dict):
        raise bad("motion must be an object or null")
    unknown = set(entry) - {"version", "actions", "source_frames"}
    if unknown:
        raise bad(f"motion: unknown keys {sorted(unknown)}")
    if "version" not in entry:
        raise bad("motion.version is missing")
    for key in ("version", "source_frames"):
        value = entry.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise bad(f"motion.{key} must be a positive integer, got {value!r}")
    if entry.get("source_frames", 1) > frame_count:
        raise bad(f"motion.source_frames is more than the {frame_count} frames")
    try:
        parse_actions(entry.get("actions", {}), frame_count, where="motion")
    except InvalidInputError as e:
        raise bad(e.message) from None


def check_name(name: str) -> str:
    """Returns ``name`` if it can name an avatar folder (no path separators, not hidden)."""
    if not _NAME_RE.match(name):
        raise InvalidInputError(
            f"avatar name {name!r} is not allowed: it must be 1-64 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class PhotoAvatar:
    """A loaded photo avatar: RGB uint8 image and its ``(478, 2)`` float32 pixel landmarks."""

    path: Path
    manifest: AvatarManifest
    image: np.ndarray
    landmarks: np.ndarray


def load_manifest(avatar_dir: Path) -> AvatarManifest:
    """Reads and validates ``avatar_dir/avatar.json`` and checks the kind's files exist.

    Raises NotFoundError when the folder or its manifest is missing, InvalidInputError (naming the
    file) when the manifest is corrupt or a data file is missing.
    """
    avatar_dir = Path(avatar_dir)
    if not avatar_dir.is_dir():
        raise NotFoundError(f"avatar folder {avatar_dir} does not exist")
    path = avatar_dir / MANIFEST
    if not path.is_file():
        raise NotFoundError(f"{path} is missing: not an avatar folder, or its build never finished")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"{path}: cannot read JSON ({e})") from e
    manifest = AvatarManifest.from_json(data, where=str(path))
    for name in REQUIRED_FILES[manifest.kind]:
        file = avatar_dir / name
        if not (file.is_dir() if name.endswith("/") else file.is_file()):
            raise InvalidInputError(f"{file} is missing from {manifest.kind} avatar {avatar_dir}")
    return manifest


def load_photo_avatar(avatar_dir: Path) -> PhotoAvatar:
    """Loads a photo avatar; every missing or corrupt file raises InvalidInputError naming it."""
    avatar_dir = Path(avatar_dir)
    manifest = load_manifest(avatar_dir)
    if manifest.kind != "photo":
        raise InvalidInputError(f"{avatar_dir / MANIFEST}: kind is {manifest.kind!r}, not 'photo'")
    image_path = avatar_dir / "image.png"
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInputError(f"{image_path}: not a readable image")
    if bgr.shape[:2] != (manifest.height, manifest.width):
        raise InvalidInputError(
            f"{image_path}: {bgr.shape[1]}x{bgr.shape[0]} does not match the manifest's "
            f"{manifest.width}x{manifest.height}"
        )
    landmarks = load_array(avatar_dir / "landmarks.npy", (NUM_LANDMARKS, 2))
    image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return PhotoAvatar(avatar_dir, manifest, image, landmarks.astype(np.float32))


def load_array(path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
    """Loads a ``.npy`` of finite numbers whose shape matches ``shape`` (None: any length)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InvalidInputError(f"{path}: not a readable .npy array ({e})") from e
    if (
        not isinstance(array, np.ndarray)
        or array.ndim != len(shape)
        or any(
            want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
        )
    ):
        raise InvalidInputError(
            f"{path}: expected shape {shape}, got {getattr(array, 'shape', '?')}"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise InvalidInputError(f"{path}: must hold finite numbers")
    return array


def list_avatars(avatars_dir: Path) -> list[AvatarManifest]:
    """Valid avatars under ``avatars_dir``, by name; hidden (temp) and broken folders skipped."""
    found = []
    for child in sorted(Path(avatars_dir).iterdir()) if Path(avatars_dir).is_dir() else []:
        if child.name.startswith(".") or not child.is_dir():
            continue
        with suppress(InvalidInputError, NotFoundError):
            found.append(load_manifest(child))
    return found


# --- atomic writes ---------------------------------------------------------------------------


def write_manifest(avatar_dir: Path, manifest: AvatarManifest) -> None:
    with atomic_file(Path(avatar_dir) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def save_image(path: Path, rgb: np.ndarray) -> None:
    """Writes an RGB uint8 image; the format follows the extension (.png, .jpg)."""
    ok, encoded = cv2.imencode(Path(path).suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InvalidInputError(f"{path}: cannot encode image of shape {rgb.shape}")
    with atomic_file(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


@contextmanager
def building(avatar_dir: Path) -> Iterator[Path]:
    """Build a whole avatar folder atomically: write everything (manifest last) into the yielded
    hidden temp folder; on success it replaces ``avatar_dir``, on error it is deleted and any
    previous ``avatar_dir`` is left as it was."""
    avatar_dir = Path(avatar_dir)
    parent = avatar_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(parent, avatar_dir.name)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{avatar_dir.name}.build-"))
    os.chmod(tmp, _DIR_MODE)  # mkdtemp makes 0700
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise InvalidInputError(f"avatar build of {avatar_dir} wrote no {MANIFEST}")
        old = None
        if avatar_dir.exists():
            # rename() cannot replace a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{avatar_dir.name}.old-"))
            os.replace(avatar_dir, old / "avatar")
        try:
            os.replace(tmp, avatar_dir)
        except OSError:
            if old is not None and not avatar_dir.exists():
                os.replace(old / "avatar", avatar_dir)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(parent: Path, name: str) -> None:
    now = time.time()
    for pattern in (f".{name}.build-*", f".{name}.old-*"):
        for stale in parent.glob(pattern):
            with suppress(OSError):
                if now - stale.stat().st_mtime > _STALE_TEMP_S:
                    shutil.rmtree(stale, ignore_errors=True)


# --- video avatars: file names and gray masks ------------------------------------------------

FRAMES_DIR = "frames"
MASKS_DIR = "masks"


def frame_file(index: int) -> str:
    """Path of footage frame ``index`` inside a video avatar folder: ``frames/000042.jpg``."""
    return f"{FRAMES_DIR}/{index:06d}.jpg"


def mask_file(index: int) -> str:
    """Path of blend mask ``index`` inside a video avatar folder: ``masks/000042.png``."""
    return f"{MASKS_DIR}/{index:06d}.png"


def save_gray(path: Path, gray: np.ndarray) -> None:
    """Writes an 8-bit single-channel image (a blend mask); the format follows the extension."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise InvalidInputError(f"{path}: expected an HxW uint8 image, got {gray.shape} {gray.dtype}")
    ok, encoded = cv2.imencode(Path(path).suffix, gray)
    if not ok:
        raise InvalidInputError(f"{path}: cannot encode image of shape {gray.shape}")
    with atomic_file(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def save_json(path: Path, data: object) -> None:
    """Writes ``data`` as indented UTF-8 JSON (reports such as a video avatar's summary.json)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
