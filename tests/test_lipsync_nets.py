"""Neural lip-sync networks: mel front-end, checkpoint layouts and loader errors, runtimes, ONNX
export parity, generators (CPU, random weights; GPU cases are marked and skip without CUDA)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

from livedh.errors import MissingDependencyError, ModelFileError, NotConfiguredError
from livedh.lipsync import checkpoints
from livedh.lipsync.export import PARITY_TOLERANCE, add_export_command, export_onnx, parity
from livedh.lipsync.generators import UltralightGenerator, Wav2LipGenerator
from livedh.lipsync.mel import mel_windows
from livedh.lipsync.nets import build_ultralight, build_wav2lip, calibrate_batchnorm
from livedh.lipsync.nets.ultralight import MASK_RECT, Ultralight
from livedh.lipsync.runtime import FaceRuntime, OnnxRuntime, RuntimeConfig, TorchRuntime, make_runtime

SR = 16000
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---------------------------------------------------------------------------------------------
# helpers


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Perturb BatchNorm statistics and affines so a load that dropped them would show, while
    keeping activations in range (default init weights stay)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return module.eval()


def save_official(module: nn.Module, path: Path) -> Path:
    """The layout of the published Wav2Lip files: DataParallel names under "state_dict"."""
    state = {"module." + k: v for k, v in module.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 1, "global_epoch": 1}, path)
    return path


def forward(module: nn.Module, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(faces), torch.from_numpy(audio)).numpy()


def voiced(n: int, f0: float = 150.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10))
    return (level * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def w96() -> nn.Module:
    # calibrated statistics: the random network responds to its audio (and a load that dropped
    # the statistics would show)
    torch.manual_seed(0)
    return calibrate_batchnorm(build_wav2lip("96"), 96, (1, 80, 16), seed=1)


@pytest.fixture(scope="module")
def w96_file(w96: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_official(w96, tmp_path_factory.mktemp("w2l") / "wav2lip.pth")


@pytest.fixture(scope="module")
def ul() -> Ultralight:
    torch.manual_seed(2)
    model = build_ultralight("mel")
    calibrate_batchnorm(model, 160, (1, 80, 16), seed=3)
    return model


# ---------------------------------------------------------------------------------------------
# mel front-end


def _reference_mel(x: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.melspectrogram written out plainly: pre-emphasis over the whole signal,
    centred STFT (zero-padded), Slaney mel filters built one triangle at a time, dB, normalise."""
    sr, n_fft, hop, n_mels, fmin, fmax = 16000, 800, 200, 80, 55.0, 7600.0

    def hz_to_mel(f: float) -> float:
        return f / (200 / 3) if f < 1000 else 15 + np.log(f / 1000) / (np.log(6.4) / 27)

    def mel_to_hz(m: float) -> float:
        return m * (200 / 3) if m < 15 else 1000 * np.exp((m - 15) * np.log(6.4) / 27)

    edges = [mel_to_hz(m) for m in np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    basis = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        for b, f in enumerate(freqs):
            if lo < f <= mid:
                basis[i, b] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                basis[i, b] = (hi - f) / (hi - mid)
        basis[i] *= 2 / (hi - lo)

    y = scipy.signal.lfilter([1, -0.97], [1], x.astype(np.float64))
    y = np.pad(y, n_fft // 2)
    window = scipy.signal.get_window("hann", n_fft)
    cols = 1 + (len(y) - n_fft) // hop
    mag = np.stack([np.abs(np.fft.rfft(window * y[j * hop : j * hop + n_fft])) for j in range(cols)], 1)
    db = 20 * np.log10(np.maximum(1e-5, basis @ mag)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_windows_equal_the_whole_utterance_mel(rng: np.random.Generator) -> None:
    x = voiced(SR) * np.sin(np.linspace(0, 3 * np.pi, SR)).astype(np.float32) ** 2
    x = x + 0.01 * rng.standard_normal(SR).astype(np.float32)
    full = _reference_mel(x)
    # a window for columns j..j+15 starts 400 samples (half an FFT) before column j's centre
    starts = [3, 20, 41, 60]
    windows = np.stack([x[200 * j - 400 : 200 * j - 400 + 3800] for j in starts])
    got = mel_windows(windows)
    assert got.shape == (4, 1, 80, 16) and got.dtype == np.float32
    for i, j in enumerate(starts):
        np.testing.assert_allclose(got[i, 0], full[:, j : j + 16], atol=2e-3)
    assert np.ptp(got) > 2  # speech spans the range; a constant result would match nothing


def test_mel_windows_silence_time_order_and_batch_independence() -> None:
    silence = mel_windows(np.zeros((2, 3800), np.float32))
    assert np.all(silence == -4.0)

    late = np.zeros(3800, np.float32)
    late[2600:] = voiced(1200)  # sound only in the window's last ~0.075 s
    got = mel_windows(np.stack([late, np.zeros(3800, np.float32)]))
    energy = got[0, 0].mean(axis=0)
    assert energy[-1] > energy[0] + 1  # column 0 is the earliest
    assert np.all(got[1] == -4.0)  # its batch neighbour did not leak in
    np.testing.assert_array_equal(got[0], mel_windows(late[None])[0])


# ---------------------------------------------------------------------------------------------
# architectures and checkpoints


def test_wav2lip_state_dict_layout_matches_the_published_files() -> None:
    # names and shapes of the public wav2lip.pth (Rudrabha/Wav2Lip models/wav2lip.py)
    s96 = build_wav2lip("96").state_dict()
    assert len(s96) == 352
    assert sum(p.numel() for p in build_wav2lip("96").parameters()) == 36_298_035
    expected96 = {
        "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
        "face_encoder_blocks.6.0.conv_block.0.weight": (512, 512, 3, 3),
        "audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
        "audio_encoder.12.conv_block.0.weight": (512, 512, 1, 1),
        "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),
        "face_decoder_blocks.6.0.conv_block.0.weight": (160, 64, 3, 3),
        "face_decoder_blocks.6.2.conv_block.1.running_var": (64,),
        "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
        "output_block.1.weight": (3, 32, 1, 1),
    }
    for k, shape in expected96.items():
        assert tuple(s96[k].shape) == shape, k
    # LiveTalking's wav2lip256 (wav2lip_v2.py): 8 encoder and 8 decoder blocks, 4x4 bottleneck
    s256 = build_wav2lip("256").state_dict()
    expected256 = {
        "face_encoder_blocks.6.0.conv_block.0.weight": (512, 512, 3, 3),
        "face_encoder_blocks.7.0.conv_block.0.weight": (512, 512, 4, 4),
        "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 4, 4),
        "face_decoder_blocks.2.1.conv_block.0.weight": (512, 512, 3, 3),
        "face_decoder_blocks.7.0.conv_block.0.weight": (160, 64, 3, 3),
    }
    for k, shape in expected256.items():
        assert tuple(s256[k].shape) == shape, k
    assert "face_decoder_blocks.2.2.conv_block.0.weight" not in s256
    assert "face_decoder_blocks.8.0.conv_block.0.weight" not in s256


def test_official_wav2lip_checkpoint_loads_and_reproduces_the_model(
    w96: nn.Module, w96_file: Path, rng: np.random.Generator
) -> None:
    loaded = checkpoints.load_wav2lip(w96_file, variant="96")
    assert not loaded.training
    faces = rng.random((2, 6, 96, 96), dtype=np.float32)
    audio = rng.uniform(-4, 4, (2, 1, 80, 16)).astype(np.float32)
    np.testing.assert_array_equal(forward(loaded, faces, audio), forward(w96, faces, audio))


def test_wav2lip256_checkpoint_loads(tmp_path: Path) -> None:
    model = randomize(build_wav2lip("256"), 4)
    path = save_official(model, tmp_path / "wav2lip256.pth")
    loaded = checkpoints.load_wav2lip(path, variant="256")
    expected = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # the wiring (skip concatenations at every scale) on the meta device: shapes, no compute
    with torch.device("meta"):
        meta = build_wav2lip("256")
        out = meta(torch.empty(2, 6, 256, 256), torch.empty(2, 1, 80, 16))
    assert tuple(out.shape) == (2, 3, 256, 256)


def test_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as e:
        checkpoints.load_wav2lip(tmp_path / "nope.pth")
    assert "nope.pth" in e.value.message and "models/wav2lip.pth" in e.value.message
    with pytest.raises(ModelFileError, match=r"models/wav2lip256\.pth"):
        checkpoints.load_wav2lip(tmp_path / "nope.pth", variant="256")
    with pytest.raises(ModelFileError, match="trained per avatar"):
        checkpoints.load_ultralight(tmp_path / "nope.pth")


def test_garbage_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "wav2lip.pth"
    bad.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(ModelFileError, match="not a PyTorch checkpoint"):
        checkpoints.load_wav2lip(bad)
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}}, empty)
    with pytest.raises(ModelFileError, match="no Wav2Lip state_dict"):
        checkpoints.load_wav2lip(empty)


def test_wrong_architecture_and_shape_mismatch_are_explained(
    w96: nn.Module, w96_file: Path, ul: Ultralight, tmp_path: Path
) -> None:
    with pytest.raises(ModelFileError) as e:
        checkpoints.load_wav2lip(w96_file, variant="256")
    assert "missing keys" in e.value.message and "use variant '96'" in e.value.message

    ul_file = save_official(ul, tmp_path / "ultralight_as_w2l.pth")
    with pytest.raises(ModelFileError) as e:
        checkpoints.load_wav2lip(ul_file)
    assert "unexpected keys" in e.value.message and "missing keys" in e.value.message
    assert "audio_model.conv1" in e.value.message  # names some of them

    state = {k: v.clone() for k, v in w96.state_dict().items()}
    state["output_block.1.weight"] = torch.zeros(3, 16, 1, 1)
    shaped = tmp_path / "shaped.pth"
    torch.save({"state_dict": state}, shaped)  # a bare (non-DataParallel) save is accepted too
    with pytest.raises(ModelFileError) as e:
        checkpoints.load_wav2lip(shaped)
    assert "1 shape mismatches" in e.value.message
    assert "output_block.1.weight (3, 16, 1, 1) vs (3, 32, 1, 1)" in e.value.message
    assert "missing" not in e.value.message


def test_checksums(w96_file: Path) -> None:
    good = hashlib.sha256(w96_file.read_bytes()).hexdigest()
    checkpoints.verify_checksum(w96_file, good.upper())
    with pytest.raises(ModelFileError, match="sha256"):
        checkpoints.verify_checksum(w96_file, "0" * 64)
    with pytest.raises(ModelFileError, match="sha256"):
        checkpoints.load_wav2lip(w96_file, expected_sha256="f" * 64)


def test_ultralight_roundtrip_and_foreign_state_dicts(
    ul: Ultralight, tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "ultralight.pth"
    checkpoints.save_ultralight(ul, path)
    loaded = checkpoints.load_ultralight(path)
    assert loaded.config.audio_features == "mel"
    faces = rng.random((2, 6, 160, 160), dtype=np.float32)
    audio = rng.uniform(-4, 4, (2, 1, 80, 16)).astype(np.float32)
    np.testing.assert_array_equal(forward(loaded, faces, audio), forward(ul, faces, audio))

    # an Ultralight/LiveTalking hubert file is a bare state_dict: the front-end is recognised
    hubert = randomize(build_ultralight("hubert"), 5)
    bare = tmp_path / "hubert.pth"
    torch.save(hubert.state_dict(), bare)
    from_bare = checkpoints.load_ultralight(bare)
    assert from_bare.config.audio_features == "hubert"
    got, expected = from_bare.state_dict(), hubert.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)

    other = tmp_path / "other.pth"
    torch.save({"arch": "wav2lip", "config": {}, "state_dict": {"x": torch.zeros(1)}}, other)
    with pytest.raises(ModelFileError, match="not an Ultralight"):
        checkpoints.load_ultralight(other)
    mismatched = tmp_path / "mismatched.pth"
    ckpt = checkpoints.ultralight_checkpoint(ul)
    ckpt["config"]["audio_features"] = "wenet"
    torch.save(ckpt, mismatched)
    with pytest.raises(ModelFileError, match="audio_features='wenet'"):
        checkpoints.load_ultralight(mismatched)


# ---------------------------------------------------------------------------------------------
# runtimes and ONNX


@pytest.fixture(scope="module")
def w96_onnx(w96_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Through the CLI and the default (dynamo) exporter."""
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx") / "wav2lip.onnx"
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers())
    args = parser.parse_args(
        ["export", "--arch", "wav2lip", "--checkpoint", str(w96_file), "--out", str(out)]
    )
    assert args.func(args) == 0  # the command checks parity itself and fails above tolerance
    return out


@pytest.fixture(scope="module")
def ul_onnx(ul: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Through the torchscript exporter (the dynamo one is exercised above and is ~10x slower)."""
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "ultralight.onnx"
    return export_onnx(ul, path, 160, (1, 80, 16), exporter="torchscript")


def test_onnx_export_matches_torch(
    w96: nn.Module, w96_onnx: Path, ul: nn.Module, ul_onnx: Path, rng: np.random.Generator
) -> None:
    # (the export command already checked the Wav2Lip export's parity: it returned 0)
    assert parity(ul, ul_onnx, batch=2) <= PARITY_TOLERANCE
    # dynamic batch: one export serves batch 1 and 3 alike, through both runtimes
    onnx_rt = OnnxRuntime(w96_onnx, threads=1)
    torch_rt = TorchRuntime(w96)
    for b in (1, 3):
        faces = rng.random((b, 6, 96, 96), dtype=np.float32)
        audio = rng.uniform(-4, 4, (b, 1, 80, 16)).astype(np.float32)
        got = onnx_rt.run(faces, audio)
        assert got.shape == (b, 3, 96, 96) and got.dtype == np.float32
        np.testing.assert_allclose(got, torch_rt.run(faces, audio), atol=PARITY_TOLERANCE)
    onnx_rt.close()


def test_generators_refuse_an_onnx_model_of_another_network(w96_onnx: Path) -> None:
    runtime = OnnxRuntime(w96_onnx)
    Wav2LipGenerator(runtime, size=96)  # the matching one is accepted
    with pytest.raises(ModelFileError, match=r"faces \[6, 96, 96\].*export the matching"):
        Wav2LipGenerator(runtime, size=256)
    with pytest.raises(ModelFileError, match=r"needs \[6, 160, 160\]"):
        UltralightGenerator(runtime)
    runtime.close()


def test_export_command_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers())
    args = parser.parse_args(
        ["export", "--arch", "wav2lip", "--random", "--out", "x.onnx", "--batch", "lots"]
    )
    assert args.func(args) == 2
    args = parser.parse_args(
        ["export", "--arch", "wav2lip", "--checkpoint", str(tmp_path / "none.pth"), "--out", "x.onnx"]
    )
    assert args.func(args) == 1
    assert "models/wav2lip.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --checkpoint or --random, not both
        parser.parse_args(["export", "--arch", "ultralight", "--random", "--checkpoint", "a", "--out", "b"])


def test_runtime_selection_and_errors(w96: nn.Module, tmp_path: Path, rng: np.random.Generator) -> None:
    rt = make_runtime(RuntimeConfig(kind="torch"), module=w96)
    assert isinstance(rt, TorchRuntime)
    faces = rng.random((2, 6, 96, 96), dtype=np.float32)
    audio = rng.uniform(-4, 4, (2, 1, 80, 16)).astype(np.float32)
    np.testing.assert_array_equal(rt.run(faces, audio), forward(w96, faces, audio))
    with pytest.raises(ValueError, match="equal size"):
        rt.run(faces, audio[:1])
    with pytest.raises(ValueError, match="half precision"):
        TorchRuntime(w96, device="cpu", half=True)
    with pytest.raises(ModelFileError, match="not found"):
        make_runtime(RuntimeConfig(kind="onnx"), onnx_path=tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        OnnxRuntime(junk)
    if not torch.cuda.is_available():
        with pytest.raises(NotConfiguredError, match="no CUDA"):
            TorchRuntime(w96, device="cuda")
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
                make_runtime(RuntimeConfig(kind="onnx", device="cuda"), onnx_path=junk)


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_and_graphs_match_cpu(w96: nn.Module, rng: np.random.Generator) -> None:
    import copy

    faces = rng.random((4, 6, 96, 96), dtype=np.float32)
    audio = rng.uniform(-4, 4, (4, 1, 80, 16)).astype(np.float32)
    expected = forward(w96, faces, audio)
    eager = TorchRuntime(copy.deepcopy(w96), device="cuda")
    assert eager.half
    np.testing.assert_allclose(eager.run(faces, audio), expected, atol=2e-2)
    graphs = TorchRuntime(copy.deepcopy(w96), device="cuda", cuda_graph_batches=(4,))
    first = graphs.run(faces, audio)
    np.testing.assert_allclose(first, eager.run(faces, audio), atol=1e-3)
    other = rng.random((4, 6, 96, 96), dtype=np.float32)  # a replay sees new inputs
    np.testing.assert_allclose(graphs.run(other, audio), eager.run(other, audio), atol=1e-3)
    graphs.close()
    eager.close()


# ---------------------------------------------------------------------------------------------
# generators


class RecordingRuntime(FaceRuntime):
    """Returns the reference planes it was given, so the round trip must be the identity."""

    def __init__(self, planes: slice) -> None:
        self.planes = planes
        self.faces: np.ndarray | None = None
        self.audio: np.ndarray | None = None

    def run(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.faces, self.audio = faces, audio
        return faces[:, self.planes].copy()


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_wav2lip_input_is_built_as_trained(rng: np.random.Generator) -> None:
    rec = RecordingRuntime(slice(3, 6))
    gen = Wav2LipGenerator(rec, size=96)
    assert (gen.audio_window, gen.audio_lookahead) == (3800, 1580)
    # the frame (640 samples ending `lookahead` before the window's end) sits at the centre
    assert gen.audio_window - gen.audio_lookahead - 320 == gen.audio_window // 2
    crops, refs = _images(rng, 2, 96), _images(rng, 2, 96)
    out = gen.generate(crops, refs, np.zeros((2, 3800), np.float32))
    np.testing.assert_array_equal(out, refs)  # BGR planes back to RGB, exact for uint8
    assert rec.faces is not None and rec.audio is not None
    # channel 0 is the crop's blue, in [0, 1]; the lower half of the masked crop is zero
    np.testing.assert_allclose(rec.faces[:, 0, :48], crops[:, :48, :, 2] / 255, atol=1e-7)
    assert np.all(rec.faces[:, 0:3, 48:] == 0)
    np.testing.assert_allclose(rec.faces[:, 3], refs[..., 2] / 255, atol=1e-7)
    assert rec.audio.shape == (2, 1, 80, 16)


def test_ultralight_input_is_built_as_trained(rng: np.random.Generator) -> None:
    rec = RecordingRuntime(slice(0, 3))
    gen = UltralightGenerator(rec)
    crops, refs = _images(rng, 1, 160), _images(rng, 1, 160)
    np.testing.assert_array_equal(gen.generate(crops, refs, np.zeros((1, 3800), np.float32)), refs)
    assert rec.faces is not None
    top, bottom, left, right = MASK_RECT
    assert np.all(rec.faces[:, 3:6, top:bottom, left:right] == 0)
    np.testing.assert_allclose(rec.faces[:, 3, :top], crops[:, :top, :, 2] / 255, atol=1e-7)
    np.testing.assert_allclose(rec.faces[:, 5, bottom:], crops[:, bottom:, :, 0] / 255, atol=1e-7)
    assert gen.mouth_band == (top / 160, bottom / 160)
    with pytest.raises(ValueError, match="features function"):
        UltralightGenerator(rec, audio_features="hubert")


def test_wav2lip_generator_follows_audio_and_ignores_the_masked_half(
    w96: nn.Module, rng: np.random.Generator
) -> None:
    gen = Wav2LipGenerator(TorchRuntime(w96))
    crop, ref, other_ref = _images(rng, 3, 96)
    lower, upper = crop.copy(), crop.copy()
    lower[48:] = 255 - lower[48:]
    upper[:48] = 255 - upper[:48]
    silence, speech = np.zeros(3800, np.float32), voiced(3800, 120)
    # one batch of variations of one input (batch items must not affect each other either)
    out = gen.generate(
        np.stack([crop, lower, upper, crop, crop]),
        np.stack([ref, ref, ref, other_ref, ref]),
        np.stack([silence, silence, silence, silence, speech]),
    )
    assert out.shape == (5, 96, 96, 3) and out.dtype == np.uint8
    quiet = out[0]
    np.testing.assert_array_equal(out[1], quiet)  # the masked lower half is never seen
    assert not np.array_equal(out[2], quiet)  # the upper half is
    assert not np.array_equal(out[3], quiet)  # and so is the reference
    # mean change over a uint8 level: the audio reaches the whole mouth, not a stray pixel
    assert np.abs(out[4].astype(int) - quiet).mean() > 1
    with pytest.raises(ValueError, match="audio must be"):
        gen.generate(crop[None], ref[None], np.zeros((1, 3200), np.float32))


def test_ultralight_generator_follows_audio_and_ignores_the_masked_rectangle(
    ul: nn.Module, rng: np.random.Generator
) -> None:
    gen = UltralightGenerator(TorchRuntime(ul))
    crop, ref = _images(rng, 2, 160)
    top, bottom, left, right = MASK_RECT
    inside, outside = crop.copy(), crop.copy()
    inside[top:bottom, left:right] = 255 - inside[top:bottom, left:right]
    outside[:top] = 255 - outside[:top]
    silence, speech = np.zeros(3800, np.float32), voiced(3800, 130)
    out = gen.generate(
        np.stack([crop, inside, outside, crop]), np.stack([ref] * 4), np.stack([silence] * 3 + [speech])
    )
    assert out.shape == (4, 160, 160, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], out[0])
    assert not np.array_equal(out[2], out[0])
    assert np.abs(out[3].astype(int) - out[0]).mean() > 1
