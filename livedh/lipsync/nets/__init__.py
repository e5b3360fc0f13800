"""Face networks: pure architectures (building one never touches files; see
``livedh.lipsync.checkpoints`` for loading weights)."""

from __future__ import annotations

import torch
from torch import nn

from livedh.lipsync.nets.ultralight import Ultralight, UltralightConfig, build_ultralight
from livedh.lipsync.nets.wav2lip import Wav2Lip, build_wav2lip

__all__ = [
    "Ultralight",
    "UltralightConfig",
    "Wav2Lip",
    "build_ultralight",
    "build_wav2lip",
    "calibrate_batchnorm",
]


#: smallest BatchNorm variance calibration leaves (a per-layer gain of at most ~3)
VAR_FLOOR = 1e-1


def calibrate_batchnorm(
    module: nn.Module, size: int, audio_shape: tuple[int, ...], seed: int = 0, batch: int = 4
) -> nn.Module:
    """For random-weight networks (tests, benchmarks, ``--random`` exports): set every BatchNorm's
    statistics from one forward pass over random faces in [0, 1] and audio in [-4, 4]. With the
    default statistics (mean 0, variance 1) a deep random network shrinks its signal layer by
    layer and all but ignores its audio; calibrated, each layer passes its input on, so outputs
    respond to the audio as a trained network's do. Variances are floored at ``VAR_FLOOR``: a
    channel that barely varied over the few calibration samples would otherwise get a gain in the
    hundreds, and such an ill-conditioned network magnifies rounding (torch and ONNX Runtime then
    differ by 1e-3, where ~1e-5 is usual). Returns the module in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # the plain average of what the pass measures
    device = next(module.parameters()).device
    faces = torch.rand(batch, 6, size, size, generator=g).to(device)
    audio = (8 * torch.rand(batch, *audio_shape, generator=g) - 4).to(device)
    module.train()
    with torch.no_grad():
        module(faces, audio)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
            m.running_var.clamp_(min=VAR_FLOOR)
            m.momentum = 0.1  # torch's default, for anyone who trains it further
    return module.eval()
