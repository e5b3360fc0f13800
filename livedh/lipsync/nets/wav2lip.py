"""The Wav2Lip generator (Prajwal et al. 2020) at 96x96, and the 256x256 variant.

Module and parameter names follow the published checkpoints so they load unchanged:
``face_encoder_blocks.<i>.<j>.conv_block.{0: Conv2d, 1: BatchNorm2d}``, ``audio_encoder.<j>...``,
``face_decoder_blocks.<i>.<j>...``, ``output_block.{0: conv block, 1: Conv2d}``.

- 96: Rudrabha/Wav2Lip ``wav2lip.pth`` / ``wav2lip_gan.pth``.
- 256: the layout LiveTalking loads as ``wav2lip256`` (its ``wav2lip_v2.py``, the Linly-Talker
  ``wav2lipv2.pth`` lineage): one more stride-2 stage on each side and a 4x4 bottleneck.

The audio encoder is the same in both: a (1, 80, 16) mel window -> a 512-d embedding.

Unlike the original ``forward(audio, face)``, ``forward(face, audio)`` here: every livedh face
network takes (faces, audio) so runtimes and ONNX exports are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Wav2LipVariant = Literal["96", "256"]
VARIANTS: tuple[Wav2LipVariant, ...] = ("96", "256")
#: mel window one frame's audio encoder reads: (channels, mel bins, columns)
MEL_SHAPE = (1, 80, 16)


class ConvBlock(nn.Module):
    """Conv + BatchNorm + ReLU, with an optional identity shortcut (same in/out shape)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpBlock(nn.Module):
    """Transposed conv + BatchNorm + ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


@dataclass(frozen=True)
class _Stage:
    """One encoder/decoder stage: an entry conv (strided, or transposed for the decoder) then
    ``residuals`` 3x3 identity blocks at ``cout`` channels."""

    cin: int
    cout: int
    residuals: int
    kernel: int = 3
    stride: int = 2
    padding: int = 1


def _encoder_stage(s: _Stage) -> nn.Sequential:
    layers: list[nn.Module] = [ConvBlock(s.cin, s.cout, s.kernel, s.stride, s.padding)]
    layers += [ConvBlock(s.cout, s.cout, 3, 1, 1, residual=True) for _ in range(s.residuals)]
    return nn.Sequential(*layers)


def _decoder_stage(s: _Stage) -> nn.Sequential:
    output_padding = 1 if s.stride == 2 else 0
    layers: list[nn.Module] = [UpBlock(s.cin, s.cout, s.kernel, s.stride, s.padding, output_padding)]
    layers += [ConvBlock(s.cout, s.cout, 3, 1, 1, residual=True) for _ in range(s.residuals)]
    return nn.Sequential(*layers)


def _bottleneck(cin: int, kernel: int) -> nn.Sequential:
    # a valid (unpadded) conv down to 1x1, then a 1x1 conv
    return nn.Sequential(ConvBlock(cin, 512, kernel, 1, 0), ConvBlock(512, 512, 1, 1, 0))


# Encoder stages before the bottleneck. Spatial sizes in comments; the last stage's output size
# is the bottleneck kernel (3 at 96, 4 at 256).
_ENCODERS: dict[Wav2LipVariant, tuple[list[_Stage], int]] = {
    "96": (
        [
            _Stage(6, 16, 0, kernel=7, stride=1, padding=3),  # 96
            _Stage(16, 32, 2),  # 48
            _Stage(32, 64, 3),  # 24
            _Stage(64, 128, 2),  # 12
            _Stage(128, 256, 2),  # 6
            _Stage(256, 512, 1),  # 3
        ],
        3,
    ),
    "256": (
        [
            _Stage(6, 16, 0, kernel=7, stride=1, padding=3),  # 256
            _Stage(16, 32, 2),  # 128
            _Stage(32, 64, 3),  # 64
            _Stage(64, 128, 2),  # 32
            _Stage(128, 256, 2),  # 16
            _Stage(256, 512, 1),  # 8
            _Stage(512, 512, 1),  # 4
        ],
        4,
    ),
}

# Decoder stages after the 1x1 head; each output is concatenated with the encoder skip of the
# same size, hence the growing ``cin``.
_DECODERS: dict[Wav2LipVariant, list[_Stage]] = {
    "96": [
        _Stage(1024, 512, 1, stride=1, padding=0),  # 3
        _Stage(1024, 512, 2),  # 6
        _Stage(768, 384, 2),  # 12
        _Stage(512, 256, 2),  # 24
        _Stage(320, 128, 2),  # 48
        _Stage(160, 64, 2),  # 96
    ],
    "256": [
        _Stage(1024, 512, 1, kernel=4, stride=1, padding=0),  # 4
        _Stage(1024, 512, 1),  # 8
        _Stage(1024, 512, 2),  # 16
        _Stage(768, 384, 2),  # 32
        _Stage(512, 256, 2),  # 64
        _Stage(320, 128, 2),  # 128
        _Stage(160, 64, 2),  # 256
    ],
}


def _audio_encoder() -> nn.Sequential:
    # (1, 80, 16) -> (512, 1, 1): strides (3,1), 3, (3,2) shrink 80x16 to 3x3, then a valid 3x3
    return nn.Sequential(
        ConvBlock(1, 32, 3, 1, 1),
        ConvBlock(32, 32, 3, 1, 1, residual=True),
        ConvBlock(32, 32, 3, 1, 1, residual=True),
        ConvBlock(32, 64, 3, (3, 1), 1),
        ConvBlock(64, 64, 3, 1, 1, residual=True),
        ConvBlock(64, 64, 3, 1, 1, residual=True),
        ConvBlock(64, 128, 3, 3, 1),
        ConvBlock(128, 128, 3, 1, 1, residual=True),
        ConvBlock(128, 128, 3, 1, 1, residual=True),
        ConvBlock(128, 256, 3, (3, 2), 1),
        ConvBlock(256, 256, 3, 1, 1, residual=True),
        ConvBlock(256, 512, 3, 1, 0),
        ConvBlock(512, 512, 1, 1, 0),
    )


class Wav2Lip(nn.Module):
    """faces (B, 6, S, S) in [0, 1] (BGR lower-half-masked frame, then BGR reference) and mel
    windows (B, 1, 80, 16) -> faces (B, 3, S, S) in [0, 1], BGR."""

    def __init__(self, variant: Wav2LipVariant = "96") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown Wav2Lip variant {variant!r}; choose one of {VARIANTS}")
        self.variant: Wav2LipVariant = variant
        self.size = int(variant)
        stages, bottleneck = _ENCODERS[variant]
        self.face_encoder_blocks = nn.ModuleList(
            [_encoder_stage(s) for s in stages] + [_bottleneck(512, bottleneck)]
        )
        self.audio_encoder = _audio_encoder()
        self.face_decoder_blocks = nn.ModuleList(
            [nn.Sequential(ConvBlock(512, 512, 1, 1, 0))] + [_decoder_stage(s) for s in _DECODERS[variant]]
        )
        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


def build_wav2lip(variant: Wav2LipVariant = "96") -> Wav2Lip:
    """A randomly initialised Wav2Lip generator in eval mode (load weights with
    ``livedh.lipsync.checkpoints.load_wav2lip``)."""
    return Wav2Lip(variant).eval()
