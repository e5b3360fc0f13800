"""A WebRTC session streams with a neural lip-sync model (Wav2Lip-96, random weights saved in
the official checkpoint layout) on a video avatar built in the test."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from livedh.avatar.video import write_video_avatar
from livedh.lipsync.nets import calibrate_batchnorm
from livedh.lipsync.nets.wav2lip import build_wav2lip
from livedh.testing.live import live_server
from livedh.testing.netns import netns_available

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]


def test_wav2lip_session_streams_generated_mouth_at_the_face_box(tmp_path):
    avatars, models = tmp_path / "avatars", tmp_path / "models"
    models.mkdir()
    # Still footage: any change in the mouth box comes from the generator, not from motion.
    frames = [np.ascontiguousarray(skimage.data.astronaut()) for _ in range(8)]
    manifest = write_video_avatar(avatars / "still", frames, fps=25, name="still",
                                  model="wav2lip", progress=False)
    torch.manual_seed(0)
    network = build_wav2lip("96")
    # Random weights with BatchNorm statistics from real activations: the output then depends
    # on the audio, as a trained network's does.
    calibrate_batchnorm(network, 96, (1, 80, 16))
    state = {f"module.{k}": v for k, v in network.state_dict().items()}
    torch.save({"state_dict": state}, models / "wav2lip.pth")

    with live_server(tmp_path, "--model", "wav2lip", "--avatar", "still",
                     "--avatars-dir", str(avatars), "--models-dir", str(models),
                     "--asr", "off") as server:
        status, avatar = server.get("/api/v1/avatar")
        assert status == 200 and avatar["model"] == "wav2lip"
        assert avatar["mouth_box"] == list(manifest.mouth_box)
        result = server.probe("--seconds", "9", "--say",
                              "Hello! This mouth is drawn by a neural network.", "--say-at", "1.0")
    assert result["errors"] == []
    assert result["video_size"] == [512, 512]
    # The stream keeps its clock even where the CPU renders fewer frames than it sends.
    assert result["fps"] >= 23.0, result
    assert result["speech_seconds"] > 1.0, result
    # The generated crop lands on the face: the mouth box changes while, and only while,
    # the avatar speaks (still footage otherwise).
    assert result["mouth_audio_corr"] is not None and result["mouth_audio_corr"] > 0.3, result
