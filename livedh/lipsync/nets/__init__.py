"""Face networks: pure architectures (building one never touches files; see
``livedh.lipsync.checkpoints`` for loading weights)."""

from livedh.lipsync.nets.ultralight import Ultralight, UltralightConfig, build_ultralight
from livedh.lipsync.nets.wav2lip import Wav2Lip, build_wav2lip

__all__ = ["Ultralight", "UltralightConfig", "Wav2Lip", "build_ultralight", "build_wav2lip"]
