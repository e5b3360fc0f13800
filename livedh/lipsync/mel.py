"""Wav2Lip's audio front-end (log-mel spectrogram) in numpy, computed per frame window.

The published Wav2Lip weights were trained on librosa's mel spectrogram of the whole utterance
(pre-emphasis, centred STFT, Slaney mel filters, dB, symmetric normalisation to [-4, 4]); a frame
is given 16 consecutive mel columns (0.2 s at 80 columns/s). Here each frame's 16 columns are
computed straight from its own audio window: a window of ``n_fft + 15 * hop`` samples holds every
sample those 16 STFT frames read, so the result equals the whole-utterance computation's columns
(no edge padding inside speech) while sessions stay stateless and batch across each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft


@dataclass(frozen=True)
class MelParams:
    """Wav2Lip's ``hparams.py`` audio settings."""

    sample_rate: int = 16000
    preemphasis: float = 0.97
    n_fft: int = 800
    hop: int = 200
    win: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0
    #: mel columns per frame (16 at 80 columns/s = 0.2 s)
    columns: int = 16

    @property
    def window_samples(self) -> int:
        """Audio samples the ``columns`` STFT frames read: 800 + 15 * 200 = 3800 at defaults."""
        return self.n_fft + (self.columns - 1) * self.hop


WAV2LIP_MEL = MelParams()


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's auditory scale (librosa's default, htk=False): linear below 1 kHz, log above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / f_sp
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(params: MelParams = WAV2LIP_MEL) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, Slaney-normalised (constant area), as
    ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` builds them."""
    fft_hz = np.linspace(0.0, params.sample_rate / 2, params.n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(params.fmin)), _hz_to_mel(np.array(params.fmax)), params.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


class MelFrontEnd:
    """Per-frame mel windows for a batch of audio windows. Holds the precomputed STFT window and
    filterbank; stateless across calls, so one instance serves every session."""

    def __init__(self, params: MelParams = WAV2LIP_MEL) -> None:
        if params.win != params.n_fft:
            raise ValueError("win must equal n_fft (Wav2Lip uses 800/800)")
        self.params = params
        n = np.arange(params.n_fft)
        # periodic Hann (scipy.signal.get_window('hann', N)), librosa's STFT window
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * n / params.n_fft)).astype(np.float32)
        # transposed once for a (frames, bins) @ (bins, mels) product
        self._basis_t = np.ascontiguousarray(mel_filterbank(params).T.astype(np.float32))
        self._min_amp = np.float32(10 ** (params.min_level_db / 20))

    @property
    def window_samples(self) -> int:
        return self.params.window_samples

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """audio: float32 (B, N) 16 kHz windows, each centred on its frame. Returns float32
        (B, 1, n_mels, columns): the mel columns whose STFT frames are centred on the middle
        ``columns`` hops of the window. Windows longer than ``window_samples`` are cut to their
        centre; shorter ones are zero-padded (silence) at both ends."""
        p = self.params
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"audio must be (B, samples), got shape {x.shape}")
        x = _centre(x, p.window_samples)
        # pre-emphasis y[n] = x[n] - k x[n-1]; y[0] keeps x[0] (lfilter from rest) — its Hann
        # weight is 0 anyway
        y = np.empty_like(x)
        y[:, 0] = x[:, 0]
        np.subtract(x[:, 1:], np.float32(p.preemphasis) * x[:, :-1], out=y[:, 1:])
        frames = np.lib.stride_tricks.sliding_window_view(y, p.n_fft, axis=1)[:, :: p.hop]
        # scipy's FFT keeps float32 (numpy's is ~4x slower here)
        spectrum = np.abs(scipy.fft.rfft(frames * self._window, axis=-1))  # (B, columns, bins)
        mel = spectrum.astype(np.float32, copy=False) @ self._basis_t  # (B, columns, mels)
        db = 20 * np.log10(np.maximum(mel, self._min_amp)) - p.ref_level_db
        m = p.max_abs_value
        norm = np.clip((2 * m) * (db - p.min_level_db) / (-p.min_level_db) - m, -m, m)
        return np.ascontiguousarray(norm.transpose(0, 2, 1)[:, None], dtype=np.float32)


def _centre(x: np.ndarray, n: int) -> np.ndarray:
    size = x.shape[1]
    if size == n:
        return x
    if size > n:
        start = (size - n) // 2
        return x[:, start : start + n]
    left = (n - size) // 2
    return np.pad(x, ((0, 0), (left, n - size - left)))


@lru_cache(maxsize=4)
def _front_end(params: MelParams) -> MelFrontEnd:
    # a memo of a pure function of the (frozen) params, not shared state
    return MelFrontEnd(params)


def mel_windows(audio_batch: np.ndarray, params: MelParams = WAV2LIP_MEL) -> np.ndarray:
    """float32 (B, N) audio windows -> float32 (B, 1, 80, 16) Wav2Lip mel windows, one per frame
    (see ``MelFrontEnd.windows``)."""
    return _front_end(params).windows(audio_batch)



def frame_audio_windows(
    audio: np.ndarray, frame_count: int, fps: int, window: int, lookahead: int
) -> np.ndarray:
    """float32 (frame_count, window): for each video frame ``i`` the ``window`` samples of 16 kHz
    ``audio`` that end ``lookahead`` samples after the frame's end, zero-padded outside the
    audio. These are the windows the lip-sync engine hands a generator while streaming, so a
    network trained on them sees at run time what it saw in training."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    hop = 16000 // fps
    padded = np.pad(x, (window, window + lookahead + hop + max(0, frame_count * hop - len(x))))
    ends = (np.arange(frame_count) + 1) * hop + lookahead + window
    return padded[ends[:, None] - window + np.arange(window)[None, :]]


def frame_mel_windows(
    audio: np.ndarray, frame_count: int, fps: int, params: MelParams = WAV2LIP_MEL
) -> np.ndarray:
    """float32 (frame_count, 1, n_mels, columns): the mel window of every video frame of a clip
    whose 16 kHz mono ``audio`` starts with frame 0, centred on the frame as the generators
    centre it (``generators.centred_lookahead``)."""
    window = params.window_samples
    lookahead = max(0, (window - 16000 // fps) // 2)
    front = _front_end(params)
    windows = frame_audio_windows(audio, frame_count, fps, window, lookahead)
    chunks = [front.windows(windows[i : i + 256]) for i in range(0, frame_count, 256)]
    if not chunks:
        return np.zeros((0, 1, params.n_mels, params.columns), np.float32)
    return np.concatenate(chunks)
