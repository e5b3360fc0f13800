"""`livedh avatar train`: the per-avatar Ultralight trainer, its SyncNet and its report.

Everything runs on a 4 s synthetic talking clip (the astronaut whose mouth opens with a
speech-like sound), with tiny networks and few steps, on at most 2 CPU threads.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from livedh.avatar.video import write_video_avatar
from livedh.cli import main
from livedh.errors import InvalidInputError, NotFoundError
from livedh.lipsync.checkpoints import load_ultralight
from livedh.lipsync.generators import UltralightGenerator
from livedh.lipsync.mel import frame_audio_windows
from livedh.lipsync.runtime import FaceRuntime, TorchRuntime
from livedh.lipsync.training import syncnet as sn
from livedh.lipsync.training.data import WINDOW, holdout_split, load_training_data
from livedh.lipsync.training.trainer import (
    CHECKPOINT,
    REPORT,
    WEIGHTS,
    TrainConfig,
    sync_batch,
    train_avatar,
    ultralight_inputs,
)
from livedh.media.pcm import write_wav
from livedh.testing.talking_video import speech_like_audio, talking_frames

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NAME = "talker"
#: small networks and 2 threads: the whole file stays fast on a shared 2-core machine
TINY = TrainConfig(
    quick=True, channels=(8, 16, 32, 64, 128), syncnet_width=8, threads=2, progress=False, device="cpu"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s, 100-frame Ultralight video avatar with its audio."""
    root = tmp_path_factory.mktemp("built")
    audio = speech_like_audio(4.0, seed=1)
    write_video_avatar(root / NAME, talking_frames(audio, 25), 25, NAME, model="ultralight", progress=False)
    write_wav(root / NAME / "audio.wav", np.round(audio * 32767).astype(np.int16))
    return root / NAME


@pytest.fixture
def avatars(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the avatar in its own avatars folder (training writes into the avatar)."""
    shutil.copytree(built, tmp_path / "avatars" / NAME)
    return tmp_path / "avatars"


def _finite_numbers(obj: object) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return []
    return [float(obj)]


class RecordingRuntime(FaceRuntime):
    def __init__(self) -> None:
        self.faces: np.ndarray | None = None
        self.audio: np.ndarray | None = None

    def run(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.faces, self.audio = faces, audio
        return faces[:, 3:6].copy()


def test_training_inputs_are_the_runtime_inputs(avatars: Path) -> None:
    data = load_training_data(avatars / NAME, progress=False)
    rng = np.random.default_rng(0)
    frames = np.array([3, 40, 77])
    references = rng.integers(0, 256, (3, 160, 160, 3), dtype=np.uint8)
    runtime = RecordingRuntime()
    gen = UltralightGenerator(runtime, fps=data.fps)
    windows = frame_audio_windows(
        data.audio, data.frame_count, data.fps, gen.audio_window, gen.audio_lookahead
    )
    gen.generate(data.crops[frames], references, windows[frames])
    ours = ultralight_inputs(torch.from_numpy(data.crops[frames]), torch.from_numpy(references))
    assert runtime.faces is not None and runtime.audio is not None
    np.testing.assert_array_equal(ours.numpy(), runtime.faces)
    np.testing.assert_allclose(data.mels[frames], runtime.audio, atol=1e-5)
    assert data.crops.shape == (100, 160, 160, 3) and data.crops.dtype == np.uint8


def test_holdout_split_keeps_windows_apart() -> None:
    assert holdout_split(100, 0.1) == 90
    assert holdout_split(60, 0.1) == 50  # at least 10 frames held out
    with pytest.raises(InvalidInputError, match="too few"):
        holdout_split(25, 0.1)
    with pytest.raises(InvalidInputError, match="between 0 and 1"):
        holdout_split(100, 1.5)


def test_quick_training_exports_weights_the_server_loads(avatars: Path) -> None:
    from livedh.config import AppConfig
    from livedh.lipsync.base import LipSyncRequest
    from livedh.lipsync.loader import load_lipsync_model

    folder = avatars / NAME
    data = load_training_data(folder, progress=False)
    starts = data.train_window_starts()
    assert starts.max() + WINDOW <= data.holdout_start  # no training window reaches the held-out part
    result = train_avatar(folder, TINY)
    assert result.resumed_from == 0
    assert (folder / CHECKPOINT).is_file() and result.weights == folder / WEIGHTS

    model = load_ultralight(folder / WEIGHTS)
    assert model.config.channels == (8, 16, 32, 64, 128)
    gen = UltralightGenerator(TorchRuntime(model), fps=25)
    out = gen.generate(data.crops[:2], data.crops[2:4], np.zeros((2, gen.audio_window), np.float32))
    assert out.shape == (2, 160, 160, 3) and out.dtype == np.uint8

    lipsync = load_lipsync_model(AppConfig(avatars_dir=avatars, avatar=NAME, model="ultralight"))
    try:
        window = np.asarray(data.audio[: lipsync.audio_window], np.float32) * 0 + 0.3 * np.sin(
            np.arange(lipsync.audio_window, dtype=np.float32) * 0.2
        )
        frame = lipsync.infer([LipSyncRequest(5, window)])[0]
        assert frame.shape == (512, 512, 3)
    finally:
        lipsync.close()

    report = json.loads((folder / REPORT).read_text())
    for key in (
        "mouth_l1", "mouth_psnr_db", "sync_score_generated", "sync_score_real", "sync_score_real_shifted",
        "mouth_audio_correlation_generated", "mouth_audio_correlation_real", "holdout_frames",
    ):  # fmt: skip
        assert isinstance(report[key], int | float) and math.isfinite(report[key]), key
    assert report["holdout_frames"] == 10
    assert report["training"]["steps"] == 4 and report["training"]["syncnet_steps"] == 4
    assert report["training"]["generator_samples_per_s"] > 0
    numbers = _finite_numbers(report)
    assert numbers and all(math.isfinite(x) for x in numbers)
    # the real footage's mouth follows its audio: the report's yardstick works
    assert report["mouth_audio_correlation_real"] > 0.5


def test_resume_continues_from_the_saved_step(avatars: Path) -> None:
    folder = avatars / NAME
    no_report = {**TINY.__dict__, "report": False}
    first = train_avatar(folder, TrainConfig(**{**no_report, "steps": 2, "syncnet_steps": 3}))
    assert (first.resumed_from, first.resumed_syncnet_from) == (0, 0)
    saved = torch.load(folder / CHECKPOINT, weights_only=True)
    assert (saved["step"], saved["syncnet_step"]) == (2, 3)

    second = train_avatar(folder, TrainConfig(**{**TINY.__dict__, "steps": 5, "syncnet_steps": 3}))
    assert (second.resumed_from, second.resumed_syncnet_from) == (2, 3)
    saved = torch.load(folder / CHECKPOINT, weights_only=True)
    assert (saved["step"], saved["syncnet_step"]) == (5, 3)
    assert second.report["training"]["steps"] == 5

    with pytest.raises(InvalidInputError, match="--restart"):
        train_avatar(folder, TrainConfig(**{**TINY.__dict__, "channels": (8, 16, 32, 64, 64)}))
    with pytest.raises(InvalidInputError, match="--holdout"):
        train_avatar(folder, TrainConfig(**{**TINY.__dict__, "holdout": 0.2}))
    again = TrainConfig(**{**no_report, "steps": 1, "syncnet_steps": 1})
    restarted = train_avatar(folder, again, restart=True)
    assert restarted.resumed_from == 0
    assert torch.load(folder / CHECKPOINT, weights_only=True)["step"] == 1


def test_syncnet_learns_to_tell_sync_from_shifted_audio(avatars: Path) -> None:
    from livedh.lipsync.training.trainer import _Tensors

    folder = avatars / NAME
    changes = {"steps": 0, "syncnet_steps": 80, "syncnet_batch_size": 8, "report": False}
    config = TrainConfig(**{**TINY.__dict__, **changes})
    train_avatar(folder, config)
    saved = torch.load(folder / CHECKPOINT, weights_only=True)
    syncnet = sn.SyncNet(8)
    syncnet.load_state_dict(saved["syncnet"])
    data = load_training_data(folder, progress=False)
    faces, mels, labels = sync_batch(_Tensors(data, torch.device("cpu")), np.random.default_rng(99), 48)
    scores = sn.sync_score(syncnet, faces, mels)
    in_sync, shifted = scores[labels == 1].mean().item(), scores[labels == 0].mean().item()
    assert in_sync > shifted + 0.15, (in_sync, shifted)


def test_untrainable_avatars_are_refused(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    silent = avatars / "silent"
    shutil.copytree(built, silent)
    (silent / "audio.wav").unlink()
    manifest = json.loads((silent / "avatar.json").read_text())
    (silent / "avatar.json").write_text(json.dumps({**manifest, "name": "silent"}))
    with pytest.raises(InvalidInputError, match=r"without sound.*rebuild it from a video with its audio"):
        train_avatar(silent, TINY)

    mute = avatars / "mute"
    shutil.copytree(built, mute)
    write_wav(mute / "audio.wav", np.zeros(16000, np.int16))
    with pytest.raises(InvalidInputError, match="silent"):
        train_avatar(mute, TINY)

    w2l = avatars / "w2l"
    shutil.copytree(built, w2l)
    (w2l / "avatar.json").write_text(json.dumps({**manifest, "name": "w2l", "model": "wav2lip"}))
    with pytest.raises(InvalidInputError, match="rebuild it with --model ultralight"):
        train_avatar(w2l, TINY)
    with pytest.raises(NotFoundError):
        train_avatar(avatars / "nobody", TINY)

    expected = {"nobody": "does not exist", "silent": "without sound", "w2l": "--model ultralight"}
    for name, message in expected.items():
        assert main(["avatar", "train", name, "--avatars-dir", str(avatars), "--quick"]) == 2
        assert message in capsys.readouterr().err


def test_cli_quick_run(avatars: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(2)
    code = main(["avatar", "train", NAME, "--avatars-dir", str(avatars), "--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mouth region vs real" in out and "SyncNet P(in sync)" in out and "weights:" in out
    assert load_ultralight(avatars / NAME / WEIGHTS).config.channels == (16, 32, 64, 128, 256)


@pytest.mark.gpu
@needs_cuda
def test_quick_training_on_cuda(avatars: Path) -> None:
    config = TrainConfig(quick=True, device="cuda", progress=False)
    result = train_avatar(avatars / NAME, config)
    assert result.device == "cuda"
    model = load_ultralight(result.weights)
    assert model.config.channels == (32, 64, 128, 256, 512)
    assert all(math.isfinite(x) for x in _finite_numbers(result.report))
