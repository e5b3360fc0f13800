"""A small audio-visual SyncNet (after Wav2Lip's colour SyncNet): is this mouth saying this audio?

Faces: the lower half of 5 consecutive 160 px crops (BGR in [0, 1], as the generator outputs
them), each downscaled to 48x96 and stacked into 15 channels. Audio: the (1, 80, 16) mel window
of the middle frame, which spans 0.2 s, i.e. the 5 frames. Each side is encoded to an
L2-normalised embedding; their cosine similarity, through a learned scale and bias, is the logit
of P(in sync). It is trained with BCE on in-sync pairs against pairs whose audio comes from a
window at least 5 frames away; frozen, it then gives the generator's sync loss and the report's
sync score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: faces per SyncNet window
FRAMES = 5
#: (height, width) each crop's lower half is resized to
FACE_SIZE = (48, 96)
EMBEDDING = 256
#: bump when the architecture changes: an older checkpoint then does not resume
VERSION = 1


class _Conv(nn.Module):
    """Conv, BatchNorm, ReLU; with ``residual`` (same shape in and out) the input is added."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        return F.relu(out + x if self.residual else out)


class SyncNet(nn.Module):
    """faces (B, 15, 48, 96) and mel (B, 1, 80, 16) -> logits (B,) of P(in sync). ``width``:
    channels of the first layer (then x2, x4, x8); 32 costs ~0.2 GFLOP a pair, 16 a quarter."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 8 * width
        self.face_encoder = nn.Sequential(
            _Conv(3 * FRAMES, c1, (5, 5), (1, 2), 2),  # 48 x 48
            _Conv(c1, c2, 3, 2, 1),  # 24
            _Conv(c2, c2, 3, 1, 1, residual=True),
            _Conv(c2, c3, 3, 2, 1),  # 12
            _Conv(c3, c3, 3, 1, 1, residual=True),
            _Conv(c3, c4, 3, 2, 1),  # 6
            _Conv(c4, c4, 3, 1, 1, residual=True),
            _Conv(c4, c4, 3, 2, 1),  # 3
            nn.Conv2d(c4, EMBEDDING, 3, 1, 0),  # 1
        )
        self.audio_encoder = nn.Sequential(
            _Conv(1, c1, 3, 1, 1),  # 80 x 16
            _Conv(c1, c1, 3, 1, 1, residual=True),
            _Conv(c1, c2, 3, (3, 1), 1),  # 27 x 16
            _Conv(c2, c2, 3, 1, 1, residual=True),
            _Conv(c2, c3, 3, 3, 1),  # 9 x 6
            _Conv(c3, c3, 3, 1, 1, residual=True),
            _Conv(c3, c4, 3, (3, 2), 1),  # 3 x 3
            nn.Conv2d(c4, EMBEDDING, 3, 1, 0),  # 1 x 1
        )
        # cosine in [-1, 1] is too narrow a logit range for BCE: a learned scale and bias
        self.logit_scale = nn.Parameter(torch.tensor(5.0))
        self.logit_bias = nn.Parameter(torch.tensor(0.0))

    def embed(self, faces: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        face = F.normalize(self.face_encoder(faces).flatten(1).float(), dim=1)
        audio = F.normalize(self.audio_encoder(mel).flatten(1).float(), dim=1)
        return face, audio

    def forward(self, faces: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        face, audio = self.embed(faces, mel)
        return self.logit_scale * (face * audio).sum(dim=1) + self.logit_bias


def sync_faces(crops: torch.Tensor) -> torch.Tensor:
    """(B, 5, 3, 160, 160) BGR crops in [0, 1] -> (B, 15, 48, 96): each crop's lower half (the
    mouth and jaw) at SyncNet's size, stacked in time order. Differentiable (the sync loss
    flows back through it into the generator)."""
    b, t, c, h, w = crops.shape
    if t != FRAMES:
        raise ValueError(f"SyncNet takes windows of {FRAMES} frames, got {t}")
    lower = crops.reshape(b * t, c, h, w)[:, :, h // 2 :]
    small = F.interpolate(lower, size=FACE_SIZE, mode="area")
    return small.reshape(b, t * c, *FACE_SIZE)


def sync_loss(logits: torch.Tensor, in_sync: torch.Tensor) -> torch.Tensor:
    """BCE of the SyncNet's logits against 1 (in sync) / 0 (shifted)."""
    return F.binary_cross_entropy_with_logits(logits.float(), in_sync.float())


@torch.no_grad()
def sync_score(syncnet: SyncNet, faces: torch.Tensor, mel: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """P(in sync) (B,) of each window: ``faces`` (B, 15, 48, 96) from ``sync_faces``, ``mel``
    (B, 1, 80, 16) the middle frames' windows. Runs in eval mode, in batches."""
    was_training = syncnet.training
    syncnet.eval()
    try:
        out = [torch.sigmoid(syncnet(faces[i : i + batch], mel[i : i + batch]).float())
               for i in range(0, len(faces), batch)]
    finally:
        syncnet.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
