"""Which lip-sync model serves an avatar: ``--model auto`` follows the avatar's manifest."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from livedh.avatar.video import write_video_avatar
from livedh.config import AppConfig
from livedh.errors import ModelFileError, NotFoundError
from livedh.lipsync.loader import load_lipsync_model, resolve_model


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    folder = tmp_path_factory.mktemp("avatars")
    frames = [np.ascontiguousarray(skimage.data.astronaut()) for _ in range(3)]
    write_video_avatar(folder / "me", frames, fps=25, name="me", model="ultralight", progress=False)
    write_video_avatar(folder / "w2l", frames, fps=25, name="w2l", model="wav2lip", progress=False)
    return folder


def test_auto_follows_the_manifest(avatars):
    assert resolve_model(AppConfig(avatars_dir=avatars, avatar="me")) == "ultralight"
    assert resolve_model(AppConfig(avatars_dir=avatars, avatar="w2l")) == "wav2lip"
    # the default avatar is built on first use, for the photo model
    assert resolve_model(AppConfig(avatars_dir=avatars / "fresh", avatar="default")) == "photo"
    # an explicit choice is kept as given
    assert resolve_model(AppConfig(avatars_dir=avatars, avatar="me", model="wav2lip")) == "wav2lip"


def test_auto_on_a_missing_avatar_says_so(avatars):
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model(AppConfig(avatars_dir=avatars, avatar="nobody"))


def test_an_untrained_ultralight_avatar_says_how_to_train_it(avatars):
    with pytest.raises(ModelFileError, match="livedh avatar train me"):
        load_lipsync_model(AppConfig(avatars_dir=avatars, avatar="me"))
