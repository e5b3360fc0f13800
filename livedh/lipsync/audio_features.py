"""Cheap audio features that drive a mouth: loudness envelope and a brightness (shape) cue.

Everything is a pure function of one audio window, so renderers stay stateless: smoothing comes
from averaging short blocks across the window (a Hann-weighted mean of per-block openings), which
ramps the mouth over the window's length at speech onsets and ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class MouthDriveParams:
    #: block RMS at or below this (dBFS) is silence: mouth closed (keeps noise from moving it)
    floor_db: float = -50.0
    #: block RMS at or above this (dBFS) opens the mouth fully (loud vowels of normalised TTS)
    full_db: float = -14.0
    #: block length in seconds; the window is averaged over blocks of this length
    block_s: float = 0.02
    #: brightness (Hz) of a rounded vowel (o, u) and of a spread one (i, e)
    round_hz: float = 800.0
    wide_hz: float = 2300.0


@dataclass(frozen=True)
class MouthDrive:
    #: 0 closed .. 1 fully open
    opening: float
    #: -1 rounded .. +1 spread; 0 when silent
    width: float


def block_rms_db(audio: np.ndarray, block: int) -> np.ndarray:
    """RMS level (dBFS, full scale 1.0) of consecutive ``block``-sample blocks, aligned to the end
    of ``audio`` (the window's end is the anchor, so a leading remainder is dropped)."""
    x = np.asarray(audio, dtype=np.float32)
    n = len(x) // block
    if n == 0:
        return np.full(1, 10 * np.log10(float(np.mean(x * x)) + _EPS) if len(x) else -120.0)
    blocks = x[len(x) - n * block :].reshape(n, block)
    return 10 * np.log10(np.mean(blocks * blocks, axis=1) + _EPS)


def level_to_opening(db: np.ndarray, params: MouthDriveParams) -> np.ndarray:
    """dBFS -> mouth opening 0..1: linear in dB between the noise floor and full level."""
    return np.clip((db - params.floor_db) / (params.full_db - params.floor_db), 0.0, 1.0)


def mouth_drive(audio: np.ndarray, sample_rate: int, params: MouthDriveParams) -> MouthDrive:
    """Opening and shape for the frame whose audio window is ``audio`` (float32 in [-1, 1])."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 or len(x) < 2:
        return MouthDrive(0.0, 0.0)
    block = max(2, round(params.block_s * sample_rate))
    n = max(1, len(x) // block)
    # the window's centre (the frame) weighs most; endpoints excluded so no block has weight 0
    weights = np.hanning(n + 2)[1:-1] if n > 1 else np.ones(1)
    openings = level_to_opening(block_rms_db(x, block), params)
    opening = float(np.dot(weights, openings) / weights.sum())
    if opening <= 0.0:
        return MouthDrive(0.0, 0.0)
    return MouthDrive(opening, _width(x, block, n, weights * openings, sample_rate, params))


def _width(
    x: np.ndarray,
    block: int,
    n: int,
    weights: np.ndarray,
    sample_rate: int,
    params: MouthDriveParams,
) -> float:
    # Brightness from the first-difference energy ratio, which for a tone of frequency f is
    # 2 - 2cos(2 pi f / sr): a spectral-centroid stand-in without an FFT. Spread vowels (high
    # F2) are brighter than rounded ones.
    if len(x) < block:
        blocks = x.reshape(1, -1)
    else:
        blocks = x[len(x) - n * block :].reshape(n, block)
    energy = np.sum(blocks * blocks, axis=1) + _EPS
    diff = np.sum(np.diff(blocks, axis=1) ** 2, axis=1)
    ratio = np.clip(1.0 - 0.5 * diff / energy, -1.0, 1.0)
    hz = np.maximum(np.arccos(ratio) * sample_rate / (2 * np.pi), 1.0)
    w = weights[-len(hz) :]
    if w.sum() <= 0:
        return 0.0
    log_hz = float(np.dot(w, np.log(hz)) / w.sum())
    lo, hi = np.log(params.round_hz), np.log(params.wide_hz)
    return float(np.clip(2.0 * (log_hz - lo) / (hi - lo) - 1.0, -1.0, 1.0))


def rms_envelope(audio: np.ndarray, hop: int, window: int) -> np.ndarray:
    """RMS of ``window`` samples ending at each multiple of ``hop`` (1 per hop): the loudness
    envelope used by tests and benches to check a renderer follows the audio."""
    x = np.asarray(audio, dtype=np.float32)
    n = len(x) // hop
    power = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    ends = (np.arange(n) + 1) * hop
    starts = np.maximum(ends - window, 0)
    return np.sqrt((power[ends] - power[starts]) / np.maximum(ends - starts, 1))
