"""Turn taking: when the person starts talking, when it is real speech, when they are done.

:class:`TurnDetector` is pure and synchronous: the session feeds it the microphone audio from
its own task (a VAD step is ~0.3 ms per 32 ms of audio) and runs ASR on ``EndOfTurn.audio``
in the ASR engine's worker thread. Times in events are stream seconds: the audio fed so far.

Echo: the avatar's own voice leaks into the person's microphone (browser echo cancellation
reduces it, rarely to nothing), and the VAD cannot tell it from a person. The server knows what
the avatar is playing, so the session reports that level with ``set_far_end_level``; while it
(or its echo tail) lasts, a frame counts as speech only if it is clearly louder than an echo of
it could be (``echo_margin_db`` below the far-end level) and the VAD is surer than usual
(``echo_on_threshold``). The person then has to speak up a little to barge in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from livedh.asr.vad import (
    FRAME_SECONDS,
    VAD_SAMPLE_RATE,
    Hysteresis,
    SileroVADModel,
    VADConfig,
    VADFrame,
    to_float,
)


@dataclass(frozen=True)
class TurnConfig:
    vad: VADConfig = field(default_factory=VADConfig)
    #: voice must last this long (seconds) to count: shorter blips (a cough, a click, "uh")
    #: are dropped, and this is also how long barge-in waits before interrupting the avatar
    min_speech: float = 0.25
    #: voice not yet confirmed survives silent gaps up to this long (seconds); only voiced
    #: time counts towards ``min_speech``. Lets a talker's syllables add up while echo
    #: suppression gates the quieter frames between them.
    max_gap: float = 0.15
    #: silence (seconds) that ends a turn; shorter pauses stay inside it
    end_silence: float = 0.5
    #: the VAD stays sure of speech for two or three frames (60-90 ms) after the voice stops,
    #: so the silence is timed from the audio's level instead: the voice ends with the last
    #: 8 ms that is within this many dB of the turn's loudest frame (None: the VAD's end) ...
    voice_floor_db: float | None = 35.0
    #: ... but never more than this (seconds) before the VAD's own end, so soft speech the
    #: VAD hears cannot shorten the wait by more
    max_end_trim: float = 0.1
    #: silence (seconds) after which the turn *may* be over (``SpeechPaused``): a session
    #: starts transcribing and answering then, and plays the answer only if the turn does
    #: end, so the wait for ``end_silence`` hides the recognition time. None (or a value not
    #: below ``end_silence``): no such event.
    early_silence: float | None = 0.15
    #: audio kept from before the detected onset, so the first syllable is not clipped
    pre_roll: float = 0.3
    #: a turn this long (seconds of speech) ends anyway: whisper sees 30 s at once, and a
    #: stuck-open microphone must not grow a buffer forever
    max_utterance: float = 30.0
    #: echo suppression: while the avatar plays, the microphone must be within this many dB of
    #: the far-end level to start speech (None turns suppression off) ...
    echo_margin_db: float | None = 14.0
    #: ... and within this many to keep it going, so a talker's quieter syllables do not cut
    #: a barge-in short (still well above an echo 20 dB down)
    echo_hold_margin_db: float = 18.0
    #: VAD on-threshold while the avatar plays
    echo_on_threshold: float = 0.7
    #: seconds the far-end level keeps gating after it was reported: the echo path delay
    #: (playout buffers, the network, the room) plus the room's reverberation
    echo_tail: float = 0.5

    def __post_init__(self) -> None:
        if min(self.min_speech, self.max_gap, self.pre_roll) < 0 or self.end_silence <= 0:
            raise ValueError("TurnConfig needs min_speech, max_gap, pre_roll >= 0 and end_silence > 0")
        if self.max_utterance <= self.min_speech:
            raise ValueError("TurnConfig.max_utterance must exceed min_speech")
        if self.early_silence is not None and self.early_silence <= 0:
            raise ValueError("TurnConfig.early_silence must be > 0 (or None)")
        if (self.voice_floor_db is not None and self.voice_floor_db <= 0) or self.max_end_trim < 0:
            raise ValueError("TurnConfig needs voice_floor_db > 0 (or None), max_end_trim >= 0")


@dataclass(frozen=True)
class SpeechStarted:
    """Voice began at ``t`` (not yet known to be more than a blip)."""

    t: float


@dataclass(frozen=True)
class SpeechConfirmed:
    """Voice that began at ``start`` has had ``min_speech`` of voiced time by ``t``: real
    speech, so interrupt the avatar (barge-in)."""

    t: float
    start: float


@dataclass(frozen=True)
class SpeechDiscarded:
    """The voice started at ``start`` stopped before ``min_speech``, judged at ``t``: a blip."""

    t: float
    start: float


@dataclass(frozen=True)
class SpeechPaused:
    """The person has been silent for ``early_silence``: the turn may be over. ``audio`` is the
    turn so far (as ``EndOfTurn`` would give it, with less trailing silence). Either
    ``SpeechResumed`` or ``EndOfTurn`` follows; with ``EndOfTurn`` and no ``SpeechResumed`` in
    between, the person said nothing more, so what was made of ``audio`` stands."""

    audio: np.ndarray = field(repr=False)
    t: float
    start: float
    end: float


@dataclass(frozen=True)
class SpeechResumed:
    """Voice came back after ``SpeechPaused``, inside the same turn: drop what was made of the
    paused audio."""

    t: float


@dataclass(frozen=True)
class EndOfTurn:
    """The person finished a turn: transcribe ``audio``.

    audio: int16 16 kHz mono, from ``pre_roll`` before the onset to ``t``.
    start, end: stream times of the first voiced frame and of the voice's end (see
    ``TurnConfig.voice_floor_db``); t: when the turn was judged over (the end of the first VAD
    frame ``end_silence`` after ``end``, or the cap). forced: the ``max_utterance`` cap ended it.
    """

    audio: np.ndarray = field(repr=False)
    t: float
    start: float
    end: float
    forced: bool = False


TurnEvent = (
    SpeechStarted | SpeechConfirmed | SpeechDiscarded | SpeechPaused | SpeechResumed | EndOfTurn
)


def rms_level(samples: np.ndarray) -> float:
    """RMS in full-scale units (1.0 = int16 full scale) of int16 or float [-1, 1] audio."""
    if samples.dtype == np.int16 and len(samples):
        # The render loop calls this for every frame of every session: one dot product.
        x = samples.astype(np.float32)
        return float(np.sqrt(np.dot(x, x) / len(x))) / 32768.0
    audio = to_float(samples)
    if not len(audio):
        return 0.0
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


_EPS = 1e-9  # frame times are sums of 32 ms steps: compare with a little slack
_LEVEL_STEP = 128  # samples (8 ms): the resolution of the voice's end inside a VAD frame


class _EchoGate:
    """Remembers recent far-end levels against the microphone's own stream time."""

    def __init__(self, config: TurnConfig) -> None:
        self._config = config
        self._levels: deque[tuple[float, float]] = deque()

    def report(self, t: float, rms: float) -> None:
        rms = max(0.0, rms)
        if self._levels and self._levels[-1][0] >= t:
            # No microphone audio since the last report (muted, or reports come faster):
            # keep the louder, so the list stays bounded by the microphone's progress.
            rms = max(rms, self._levels.pop()[1])
        self._levels.append((t, rms))
        while self._levels[0][0] < t - 2 * self._config.echo_tail:
            self._levels.popleft()

    def level(self, frame: VADFrame) -> float:
        """The loudest far-end level that can still echo into ``frame``."""
        while self._levels and self._levels[0][0] < frame.start - self._config.echo_tail:
            self._levels.popleft()
        return max((rms for t, rms in self._levels if t <= frame.end), default=0.0)

    def allows(self, frame: VADFrame, far: float, speaking: bool) -> bool:
        margin = self._config.echo_hold_margin_db if speaking else self._config.echo_margin_db
        assert margin is not None
        return frame.rms >= far * 10 ** (-margin / 20)


class TurnDetector:
    """Splits one microphone stream into turns. Not thread-safe: one stream, one caller.

    ``vad`` is the shared model; the detector keeps its own per-stream VAD state.
    """

    # Far-end levels below this (-80 dBFS) are digital silence, not the avatar talking.
    _SILENT_FAR_END = 1e-4

    def __init__(self, config: TurnConfig, vad: SileroVADModel) -> None:
        self.config = config
        self._vad = vad.stream(config.vad)
        self._echo = _EchoGate(config) if config.echo_margin_db is not None else None
        # The VAD's own flag uses fixed thresholds; this one's on-threshold rises with echo.
        self._hysteresis = Hysteresis(config.vad)
        self._pre_frames = math.ceil(config.pre_roll / FRAME_SECONDS)
        self._fed = 0
        self._reset_turn()
        self._history: deque[np.ndarray] = deque(maxlen=max(1, self._pre_frames))

    def _reset_turn(self) -> None:
        self._start: float | None = None
        self._confirmed = False
        self._paused = False
        self._voiced = 0.0
        self._speech_end = 0.0
        self._loudest = 0.0  # RMS of the turn's loudest voiced frame
        self._audio: list[np.ndarray] = []

    @property
    def in_speech(self) -> bool:
        """Voice has started and its turn has not ended (blips included until dropped)."""
        return self._start is not None

    @property
    def silent_for(self) -> float:
        """Seconds since the last voiced frame of the turn in progress (0 when none is)."""
        return max(0.0, self.time - self._speech_end) if self._start is not None else 0.0

    @property
    def pending_end(self) -> float | None:
        """While a turn is paused (``SpeechPaused`` and no voice since): the stream time at
        which it ends if the silence goes on. None otherwise."""
        return self._speech_end + self.config.end_silence if self._paused else None

    @property
    def time(self) -> float:
        """Stream seconds fed so far."""
        return self._fed / VAD_SAMPLE_RATE

    def set_far_end_level(self, rms: float) -> None:
        """The level (RMS, 1.0 = full scale) the avatar is playing now; 0 when it is silent.

        Call it as the avatar's audio is played (e.g. each 20 ms chunk, see ``rms_level``),
        interleaved with ``push`` of the microphone audio captured meanwhile. Each report gates
        the microphone for ``echo_tail`` seconds of its audio.
        """
        if self._echo is not None:
            self._echo.report(self.time, rms)

    def push(self, samples: np.ndarray) -> list[TurnEvent]:
        """Feed 16 kHz mono microphone audio (int16 or float in [-1, 1]) of any length."""
        frames = self._vad.push(samples)
        self._fed += len(samples)
        events: list[TurnEvent] = []
        for frame in frames:
            events.extend(self._step(frame))
        return events

    def _is_speech(self, frame: VADFrame) -> bool:
        far = self._echo.level(frame) if self._echo is not None else 0.0
        if far <= self._SILENT_FAR_END:
            return self._hysteresis.update(frame.prob)
        on = max(self.config.echo_on_threshold, self.config.vad.on_threshold)
        voiced = self._hysteresis.update(frame.prob, on_threshold=on)
        assert self._echo is not None
        return voiced and self._echo.allows(frame, far, speaking=self.in_speech)

    def _step(self, frame: VADFrame) -> list[TurnEvent]:
        speech = self._is_speech(frame)
        if speech:
            # A voiced frame starts a turn or belongs to the one going on.
            self._loudest = max(self._loudest, frame.rms)
        pcm = np.clip(np.round(frame.samples * 32768.0), -32768, 32767).astype(np.int16)
        if self._start is None:
            if not speech:
                self._history.append(pcm)
                return []
            self._start = frame.start
            self._audio = [*list(self._history)[-self._pre_frames :]] if self._pre_frames else []
            self._history.clear()
            return [SpeechStarted(frame.start), *self._candidate(frame, pcm, speech)]
        if not self._confirmed:
            return self._candidate(frame, pcm, speech)
        self._audio.append(pcm)
        events: list[TurnEvent] = []
        if speech:
            self._speech_end = self._voice_end(frame)
            if self._paused:
                self._paused = False
                events.append(SpeechResumed(frame.end))
        silent = frame.end - self._speech_end
        if silent >= self.config.end_silence - _EPS:
            return [*events, self._end_turn(frame.end, forced=False)]
        if frame.end - self._start >= self.config.max_utterance - _EPS:
            return [*events, self._end_turn(frame.end, forced=True)]
        early = self.config.early_silence
        if early is not None and not self._paused and silent >= early - _EPS:
            self._paused = True
            events.append(
                SpeechPaused(np.concatenate(self._audio), frame.end, self._start, self._speech_end)
            )
        return events

    def _voice_end(self, frame: VADFrame) -> float:
        """Where the voice ends in ``frame``, a frame the VAD calls speech."""
        floor_db = self.config.voice_floor_db
        if floor_db is None:
            return frame.end
        steps = frame.samples.reshape(-1, _LEVEL_STEP)
        levels = np.sqrt(np.mean(np.square(steps, dtype=np.float64), axis=1))
        loud = np.flatnonzero(levels >= self._loudest * 10 ** (-floor_db / 20))
        if len(loud):
            return frame.start + (int(loud[-1]) + 1) * _LEVEL_STEP / VAD_SAMPLE_RATE
        # The VAD's tail after the voice (or speech too soft to time by level).
        return max(self._speech_end, frame.end - self.config.max_end_trim)

    def _candidate(self, frame: VADFrame, pcm: np.ndarray, speech: bool) -> list[TurnEvent]:
        """A frame of voice that is not yet confirmed as speech."""
        assert self._start is not None
        self._audio.append(pcm)
        if speech:
            self._voiced += FRAME_SECONDS
            # Not refined yet (see _voice_end): gaps between unconfirmed syllables are judged
            # as the VAD hears them.
            self._speech_end = frame.end
            if self._voiced >= self.config.min_speech - _EPS:
                self._confirmed = True
                return [SpeechConfirmed(frame.end, self._start)]
            return []
        if frame.end - self._speech_end <= self.config.max_gap + _EPS:
            return []
        # Too little voice before too long a gap: drop it, keeping its tail as pre-roll.
        start = self._start
        if self._pre_frames:
            self._history.extend(self._audio[-self._pre_frames :])
        self._reset_turn()
        return [SpeechDiscarded(frame.end, start)]

    def _end_turn(self, t: float, *, forced: bool) -> EndOfTurn:
        assert self._start is not None
        event = EndOfTurn(np.concatenate(self._audio), t, self._start, self._speech_end, forced)
        self._reset_turn()
        # A forced end mid-speech starts the next turn without pre-roll: that audio is already
        # in this turn.
        self._history.clear()
        return event

    def reset(self) -> None:
        """Drop any turn in progress and the VAD state (e.g. the microphone was muted)."""
        self._vad.reset()
        self._hysteresis = Hysteresis(self.config.vad)
        self._reset_turn()
        self._history.clear()
        self._fed = 0
        if self._echo is not None:
            self._echo = _EchoGate(self.config)
