"""Ultralight: a small inverted-residual UNet for 160x160 face crops (after anliyuan's
Ultralight-Digital-Human), with the audio joining at the 10x10 bottleneck.

The face input is 6 channels, BGR in [0, 1]: the reference face, then the current face with its
inner rectangle (rows 5..150, columns 5..155) blacked out. The audio encoder maps one frame's
audio features to (channels[4], 10, 10), concatenated with the face bottleneck.

Audio front-ends (``audio_features``):

- ``mel``: our default, offline and dependency-free: the Wav2Lip mel window (1, 80, 16) of
  ``livedh.lipsync.mel`` (0.2 s of audio per frame).
- ``hubert``: 16 HuBERT frames of 1024 features reshaped to (16, 32, 32), as Ultralight and
  LiveTalking's ``ultralight`` feed it; the features come from the user's extractor.
- ``wenet``: wenet encoder outputs reshaped to (128, 16, 32), as the original Ultralight feeds
  them; likewise user-supplied.

Parameter names match Ultralight's ``unet.py`` (``inc``, ``down1..4``, ``up1..4``, ``outc``,
``fuse_conv``, ``audio_model.convN/bnN``), so a hubert/wenet state_dict of that layout loads.
Weights are per avatar: there is no published checkpoint to load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

AudioFeatures = Literal["mel", "hubert", "wenet"]
AUDIO_FEATURES: tuple[AudioFeatures, ...] = ("mel", "hubert", "wenet")
SIZE = 160
#: the blacked-out rectangle of the current face: rows [top, bottom), columns [left, right)
MASK_RECT = (5, 151, 5, 156)
#: per-frame audio input each front-end expects (channels, height, width)
AUDIO_SHAPES: dict[AudioFeatures, tuple[int, int, int]] = {
    "mel": (1, 80, 16),
    "hubert": (16, 32, 32),
    "wenet": (128, 16, 32),
}
ARCH = "ultralight"


@dataclass(frozen=True)
class UltralightConfig:
    audio_features: AudioFeatures = "mel"
    #: widths of the five UNet levels; (16, 32, 64, 128, 256) is Ultralight's mobile size
    channels: tuple[int, int, int, int, int] = field(default=(32, 64, 128, 256, 512))

    @property
    def audio_shape(self) -> tuple[int, int, int]:
        return AUDIO_SHAPES[self.audio_features]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UltralightConfig:
        mode = d.get("audio_features", "mel")
        if mode not in AUDIO_FEATURES:
            raise ValueError(f"unknown audio_features {mode!r}; choose one of {AUDIO_FEATURES}")
        channels = tuple(int(c) for c in d.get("channels", (32, 64, 128, 256, 512)))
        if len(channels) != 5:
            raise ValueError(f"channels must list 5 widths, got {channels}")
        return cls(audio_features=mode, channels=cast(tuple[int, int, int, int, int], channels))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (optionally strided), 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = residual
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class DoubleIR(nn.Module):
    """Two inverted residuals; the first changes width (and resolution when strided)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(cin, cout, stride, residual=False),
            InvertedResidual(cout, cout, 1, residual=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class InConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(cin, cout, 1, residual=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inconv(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleIR(cin, cout, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """2x bilinear upsample, concatenate the skip, two inverted residuals. (Every level of a 160
    crop has an even size, so the upsampled map always matches its skip: no padding.)"""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = DoubleIR(cin, cout, stride=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([x, skip], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ConvBNReLU(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int], padding: int
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AudioConvMel(nn.Module):
    """(1, 80, 16) mel window -> (c4, 10, 10). Frequency halves three times (80 -> 10); a valid
    1x7 conv takes time from 16 to 10 columns, so every bottleneck cell sees ~0.1 s of audio
    (and, through the 3x3 layers before it, most of the window)."""

    def __init__(self, channels: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = channels
        self.conv1 = _ConvBNReLU(1, c0, 3, (2, 1), 1)  # 40 x 16
        self.conv2 = InvertedResidual(c0, c1, 1, residual=False)
        self.conv3 = _ConvBNReLU(c1, c2, 3, (2, 1), 1)  # 20 x 16
        self.conv4 = InvertedResidual(c2, c2, 1, residual=True)
        self.conv5 = _ConvBNReLU(c2, c3, 3, (2, 1), 1)  # 10 x 16
        self.conv6 = _ConvBNReLU(c3, c4, (1, 7), 1, 0)  # 10 x 10
        self.conv7 = InvertedResidual(c4, c4, 1, residual=True)
        self.conv8 = InvertedResidual(c4, c4, 1, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6):
            x = layer(x)
        return self.conv8(self.conv7(x))


class AudioConvFeatures(nn.Module):
    """Ultralight's encoder for precomputed speech features: two inverted residuals, a strided
    conv, an inverted residual, a stride-2 conv (padding 3) to 10x10, two inverted residuals.
    hubert (16, 32, 32): stride 2 then 2; wenet (128, 16, 32): stride (1, 2) then 2."""

    def __init__(self, mode: AudioFeatures, channels: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        _, c1, c2, c3, c4 = channels
        cin = AUDIO_SHAPES[mode][0]
        if mode == "hubert":
            self.conv1 = InvertedResidual(cin, c1, 1, residual=False)
            self.conv2 = InvertedResidual(c1, c2, 1, residual=False)
            stride3: tuple[int, int] = (2, 2)
        else:
            self.conv1 = InvertedResidual(cin, c2, 1, residual=cin == c2)
            self.conv2 = InvertedResidual(c2, c2, 1, residual=True)
            stride3 = (1, 2)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1, stride=stride3)
        self.bn3 = nn.BatchNorm2d(c3)
        self.conv4 = InvertedResidual(c3, c3, 1, residual=True)
        self.conv5 = nn.Conv2d(c3, c4, kernel_size=3, padding=3, stride=2)
        self.bn5 = nn.BatchNorm2d(c4)
        self.conv6 = InvertedResidual(c4, c4, 1, residual=True)
        self.conv7 = InvertedResidual(c4, c4, 1, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = F.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class Ultralight(nn.Module):
    """faces (B, 6, 160, 160) in [0, 1] (BGR reference, then BGR masked current face) and audio
    features (B, *config.audio_shape) -> faces (B, 3, 160, 160) in [0, 1], BGR."""

    def __init__(self, config: UltralightConfig) -> None:
        super().__init__()
        self.config = config
        self.size = SIZE
        c0, c1, c2, c3, c4 = config.channels
        self.audio_model: nn.Module
        if config.audio_features == "mel":
            self.audio_model = AudioConvMel(config.channels)
        else:
            self.audio_model = AudioConvFeatures(config.audio_features, config.channels)
        self.fuse_conv = nn.Sequential(DoubleIR(c4 * 2, c4, stride=1), DoubleIR(c4, c3, stride=1))
        self.inc = InConv(6, c0)
        self.down1 = Down(c0, c1)
        self.down2 = Down(c1, c2)
        self.down3 = Down(c2, c3)
        self.down4 = Down(c3, c4)
        self.up1 = Up(c4, c3 // 2)
        self.up2 = Up(c3, c2 // 2)
        self.up3 = Up(c2, c1 // 2)
        self.up4 = Up(c1, c0)
        self.outc = OutConv(c0, 3)

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(face)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x5 = self.fuse_conv(torch.cat([x5, self.audio_model(audio)], dim=1))
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return torch.sigmoid(self.outc(x))


def build_ultralight(
    audio_features: AudioFeatures = "mel",
    channels: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512),
) -> Ultralight:
    """A randomly initialised Ultralight in eval mode (weights are trained per avatar; save and
    load them with ``livedh.lipsync.checkpoints.save_ultralight`` / ``load_ultralight``)."""
    if audio_features not in AUDIO_FEATURES:
        raise ValueError(f"unknown audio_features {audio_features!r}; choose one of {AUDIO_FEATURES}")
    return Ultralight(UltralightConfig(audio_features=audio_features, channels=channels)).eval()
