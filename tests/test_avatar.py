"""Avatar folders: the default photo avatar, the manifest, load errors and atomic builds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from livedh.avatar import format as fmt
from livedh.avatar import landmarks as lm
from livedh.avatar import photo
from livedh.avatar.format import AvatarManifest, load_manifest, load_photo_avatar
from livedh.errors import InvalidInputError, NotFoundError

# The astronaut's mouth, read off the photo by eye (between the lips, mid-mouth).
ASTRONAUT_MOUTH = (224, 147)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AvatarManifest]:
    out = tmp_path_factory.mktemp("avatars") / "default"
    return out, photo.build_photo_avatar(out)


@pytest.fixture
def copy(built: tuple[Path, AvatarManifest], tmp_path: Path) -> Path:
    dst = tmp_path / "avatar"
    shutil.copytree(built[0], dst)
    return dst


def _edges(chain: tuple[int, ...], closed: bool = False) -> set[frozenset[int]]:
    pairs = list(zip(chain, chain[1:] + chain[:1] if closed else chain[1:], strict=False))
    return {frozenset(p) for p in pairs}


def test_landmark_contours_follow_mediapipe_connections() -> None:
    import mediapipe as mp

    conn = mp.solutions.face_mesh_connections

    def mp_edges(name: str) -> set[frozenset[int]]:
        return {frozenset(e) for e in getattr(conn, name)}

    lips = (
        set().union(*(_edges(c) for c in (lm.LIPS_OUTER_UPPER, lm.LIPS_OUTER_LOWER)))
        | _edges(lm.LIPS_INNER_UPPER)
        | _edges(lm.LIPS_INNER_LOWER)
    )
    assert lips == mp_edges("FACEMESH_LIPS")
    assert _edges(lm.RIGHT_EYE_UPPER) | _edges(lm.RIGHT_EYE_LOWER) == mp_edges("FACEMESH_RIGHT_EYE")
    assert _edges(lm.LEFT_EYE_UPPER) | _edges(lm.LEFT_EYE_LOWER) == mp_edges("FACEMESH_LEFT_EYE")
    assert _edges(lm.FACE_OVAL, closed=True) == mp_edges("FACEMESH_FACE_OVAL")


def test_default_avatar_is_the_astronaut_with_its_mouth_boxed(
    built: tuple[Path, AvatarManifest],
) -> None:
    path, manifest = built
    avatar = load_photo_avatar(path)
    assert np.array_equal(avatar.image, data.astronaut())
    assert avatar.landmarks.shape == (478, 2) and avatar.landmarks.dtype == np.float32
    assert "public domain" in manifest.license and "NASA" in manifest.source
    assert (manifest.kind, manifest.model, manifest.width, manifest.height) == (
        "photo", "photo", 512, 512,
    )  # fmt: skip

    x0, y0, x1, y1 = manifest.mouth_box
    assert x0 <= ASTRONAUT_MOUTH[0] < x1 and y0 <= ASTRONAUT_MOUTH[1] < y1
    # inside the face, in its lower half, and a mouth's size rather than the face's
    oval = avatar.landmarks[list(lm.FACE_OVAL)]
    (fx0, fy0), (fx1, fy1) = oval.min(axis=0), oval.max(axis=0)
    assert fx0 <= x0 and x1 <= fx1 and y1 <= fy1 + 0.15 * (fy1 - fy0)
    assert (y0 + y1) / 2 > (fy0 + fy1) / 2
    assert (x1 - x0) < 0.8 * (fx1 - fx0) and (y1 - y0) < 0.5 * (fy1 - fy0)
    # the lips are all inside it
    lips = avatar.landmarks[list(lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER)]
    assert (lips >= (x0, y0)).all() and (lips < (x1, y1)).all()


def test_manifest_round_trips(built: tuple[Path, AvatarManifest]) -> None:
    path, manifest = built
    assert load_manifest(path) == manifest
    raw = json.loads((path / "avatar.json").read_text())
    assert raw["mouth_box"] == list(manifest.mouth_box)
    assert AvatarManifest.from_json(manifest.to_json()) == manifest
    # readable by other users (a web server), despite being built in private temp files
    assert path.stat().st_mode & 0o055 == 0o055
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in path.iterdir())


def _edit_manifest(path: Path, **changes: object) -> None:
    raw = json.loads((path / "avatar.json").read_text())
    for key, value in changes.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    (path / "avatar.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("corrupt", "error", "names"),
    [
        (lambda p: (p / "avatar.json").unlink(), NotFoundError, "avatar.json"),
        (lambda p: (p / "avatar.json").write_text("{not json"), InvalidInputError, "avatar.json"),
        (lambda p: _edit_manifest(p, fps=None), InvalidInputError, "fps"),
        (lambda p: _edit_manifest(p, fps="25"), InvalidInputError, "fps"),
        (lambda p: _edit_manifest(p, kind="hologram"), InvalidInputError, "kind"),
        (lambda p: _edit_manifest(p, mouth_box=[0, 0, 600, 10]), InvalidInputError, "mouth_box"),
        (lambda p: _edit_manifest(p, format_version=99), InvalidInputError, "format_version"),
        (lambda p: _edit_manifest(p, name="../evil"), InvalidInputError, "name"),
        (lambda p: (p / "image.png").unlink(), InvalidInputError, "image.png"),
        (lambda p: (p / "landmarks.npy").unlink(), InvalidInputError, "landmarks.npy"),
    ],
)
def test_load_manifest_names_what_is_wrong(
    copy: Path, corrupt: Callable[[Path], object], error: type[Exception], names: str
) -> None:
    corrupt(copy)
    with pytest.raises(error) as info:
        load_manifest(copy)
    assert names in str(info.value)


@pytest.mark.parametrize(
    ("corrupt", "names"),
    [
        (lambda p: (p / "image.png").write_bytes(b"\x89PNG garbage"), "image.png"),
        (lambda p: cv2.imwrite(str(p / "image.png"), np.zeros((64, 64, 3), np.uint8)), "image.png"),
        (lambda p: (p / "landmarks.npy").write_bytes(b"garbage"), "landmarks.npy"),
        (lambda p: np.save(p / "landmarks.npy", np.zeros((468, 2), np.float32)), "landmarks.npy"),
        (
            lambda p: np.save(p / "landmarks.npy", np.full((478, 2), np.nan, np.float32)),
            "landmarks.npy",
        ),
    ],
)
def test_load_photo_avatar_names_corrupt_file(
    copy: Path, corrupt: Callable[[Path], object], names: str
) -> None:
    load_photo_avatar(copy)  # sound before the damage
    corrupt(copy)
    with pytest.raises(InvalidInputError) as info:
        load_photo_avatar(copy)
    assert names in str(info.value)


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_manifest(tmp_path / "nobody")


def test_photo_without_face_is_refused(tmp_path: Path) -> None:
    wall = np.full((512, 512, 3), 180, np.uint8)
    with pytest.raises(InvalidInputError, match="no face found in the image"):
        photo.build_photo_avatar(tmp_path / "wall", image=wall, name="wall")
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_crashed_build_keeps_the_previous_avatar(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load_manifest(copy)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(photo, "write_manifest", crash)
    with pytest.raises(RuntimeError):
        photo.build_photo_avatar(copy)
    assert load_manifest(copy) == before
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no temp folders left

    with pytest.raises(RuntimeError):
        photo.build_photo_avatar(copy.parent / "fresh")
    assert not (copy.parent / "fresh").exists()


def test_ensure_default_avatar_builds_once_then_reuses(
    built: tuple[Path, AvatarManifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(built[0], tmp_path / "default")
    builds: list[Path] = []
    real_build = photo.build_photo_avatar

    def counting_build(out_dir: Path, *args: object, **kwargs: object) -> AvatarManifest:
        builds.append(out_dir)
        return real_build(out_dir)

    monkeypatch.setattr(photo, "build_photo_avatar", counting_build)
    path = photo.ensure_default_avatar(tmp_path)
    assert path == tmp_path / "default" and builds == []

    _edit_manifest(path, builder="photo/0")  # built by an older builder: rebuilt
    photo.ensure_default_avatar(tmp_path)
    assert len(builds) == 1 and load_manifest(path).builder == photo.PHOTO_BUILDER

    (path / "landmarks.npy").unlink()  # broken: rebuilt
    photo.ensure_default_avatar(tmp_path)
    assert len(builds) == 2 and load_photo_avatar(path).landmarks.shape == (478, 2)

    _edit_manifest(path, builder="video/1")  # someone's own "default": left alone
    photo.ensure_default_avatar(tmp_path)
    assert len(builds) == 2

    shutil.rmtree(path)  # first use: built
    assert photo.ensure_default_avatar(tmp_path) == path
    assert len(builds) == 3 and load_manifest(path).builder == photo.PHOTO_BUILDER


def test_user_photo_is_cropped_to_a_square_around_the_face(tmp_path: Path) -> None:
    # a wider, taller photo with the face off-centre
    big = cv2.copyMakeBorder(
        data.astronaut(), 100, 300, 400, 50, cv2.BORDER_CONSTANT, value=(200, 200, 200)
    )
    manifest = photo.build_photo_avatar(tmp_path / "me", image=big, name="me")
    avatar = load_photo_avatar(tmp_path / "me")
    assert avatar.image.shape == (512, 512, 3) and manifest.name == "me"
    assert manifest.license.startswith("unknown")
    centre = avatar.landmarks.mean(axis=0)
    assert 150 < centre[0] < 362 and 120 < centre[1] < 330


def test_list_avatars_skips_temp_and_broken_folders(copy: Path) -> None:
    (copy.parent / ".avatar.build-x").mkdir()
    (copy.parent / "broken").mkdir()
    assert [m.name for m in fmt.list_avatars(copy.parent)] == ["default"]
