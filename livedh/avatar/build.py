"""``livedh avatar build``: a video avatar from a person's own video (docs/avatars.md, "Building an
avatar from a video").

Steps, each resumable:

1. **probe** (always, cheap): PyAV opens the file, reads the video packets' timestamps (no
   decoding but the first frame) and refuses what cannot become an avatar: not a video, no video
   track, too short. ``probe_video`` is this step alone, for refusing an upload at once.
2. **audio**: the audio track, 16 kHz mono, aligned with the first video frame, and Wav2Lip's
   per-frame mel windows. No audio track is allowed (the avatar streams but cannot be trained).
3. **frames**, in chunks of ``chunk_frames``: a decoder thread resamples the video to the
   avatar's fps by timestamp (nearest frame, so a variable frame rate comes out even), shrinks it
   to ``max_side`` and writes JPEGs, while the main thread counts faces (BlazeFace full range)
   and finds landmarks (FaceMesh, on a crop around the face it tracks). Then the face checks:
   too many frames without a face or with several, face too small.
4. **assemble**: crop boxes, masks, preview and summary, written with ``building()`` (atomic
   rename), the frames linked from the work folder.

Work happens in ``avatars_dir/.NAME.work/``; every finished step leaves a marker holding a key (the
input file's path, size and mtime plus the parameters the step depends on) and what is needed to
check its files. A re-run reuses steps whose marker matches and whose files check out and redoes
the others; files of a step without a valid marker are never trusted. The work folder is removed
after a successful build, or when the input is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from livedh.avatar import landmarks as lm
from livedh.avatar.format import AvatarManifest, check_name, load_array, save_array, save_json
from livedh.avatar.video import (
    AvatarFrames,
    VideoBuildParams,
    assemble_video_avatar,
    check_model,
    interpolate_missing,
)
from livedh.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from livedh.media.pcm import write_wav

if TYPE_CHECKING:
    from livedh.avatar.motion_actions import ActionSpec

log = logging.getLogger(__name__)

#: part of every step's key: bump when a step's output changes, so old work is not reused
STEP_VERSION = 1
SAMPLE_RATE = 16000

#: ``progress(step, done, total)``
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildParams:
    #: frame rate of the avatar (the source is resampled to it)
    fps: int = 25
    #: long side of the stored frames in pixels; larger sources are shrunk (never enlarged)
    max_side: int = 1280
    #: shortest footage accepted, in seconds: the renderer loops it, so a short clip repeats
    #: visibly, and training needs enough speech
    min_seconds: float = 10.0
    #: longest footage accepted, seconds (None: no limit); the server sets these three so an
    #: upload cannot become a job of hours or gigabytes
    max_seconds: float | None = None
    #: largest source frame, width x height (None: no limit)
    max_input_pixels: int | None = None
    #: most source frames decoded (None: no limit); also enforced while building, as a
    #: container can lie about its length
    max_frames: int | None = None
    #: refuse the video when more frames than this have no face
    max_missing_face_fraction: float = 0.2
    #: refuse the video when more frames than this show two or more faces
    max_several_faces_fraction: float = 0.1
    #: smallest median face height (forehead to chin) in stored-frame pixels: Wav2Lip works on
    #: 96 px crops, and a smaller face is upscaled into mush
    min_face_px: float = 96.0
    #: crop recipe of the lip-sync model: "ultralight" or "wav2lip"
    model: str = "ultralight"
    #: JPEG quality of the stored frames
    jpeg_quality: int = 95
    #: frames per resumable unit of the frames step
    chunk_frames: int = 250
    #: BlazeFace score from which a detection counts as a face
    face_score: float = 0.6
    #: faces smaller than this fraction of the largest one (height) are not counted as another
    #: person: a face on a poster far behind does not disturb the crop
    other_face_ratio: float = 0.33
    #: long side of the image BlazeFace sees: its full-range model works at 192x192 anyway
    detect_side: int = 384
    #: count faces on every k-th frame (and on every frame where the tracked face was lost):
    #: BlazeFace is the costliest model per frame, and people do not enter the picture for a
    #: single frame (the several-faces share is over the counted frames)
    count_faces_every: int = 2
    #: boxes smoothing and masks
    video: VideoBuildParams = field(default_factory=VideoBuildParams)
    #: build the motion graph (livedh/avatar/motion_build.py): body poses, idle/gesture loops
    motion: bool = True
    #: the pose model sees every k-th frame; poses in between are interpolated
    pose_stride: int = 2


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learned about a video without decoding it."""

    path: str
    size_bytes: int
    mtime_ns: int
    container: str
    codec: str
    #: displayed size (after the rotation in the file's metadata)
    width: int
    height: int
    #: display rotation in degrees (phones film portrait as rotated landscape)
    rotation: int
    #: first frame's time and the span of the video frames, seconds
    start_s: float
    duration_s: float
    source_frames: int
    source_fps: float
    variable_frame_rate: bool
    #: min / median / max gap between frames, milliseconds
    frame_interval_ms: tuple[float, float, float]
    audio: bool
    audio_codec: str | None

    def stored_size(self, params: BuildParams) -> tuple[int, int]:
        """Size of the avatar's frames: long side at most ``max_side``, even (video encoders of
        the stream want even sizes)."""
        scale = min(1.0, params.max_side / max(self.width, self.height))
        return max(2, round(self.width * scale / 2) * 2), max(2, round(self.height * scale / 2) * 2)

    def frame_count(self, params: BuildParams) -> int:
        return max(1, round(self.duration_s * params.fps))

    def fingerprint(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size_bytes, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: AvatarManifest
    summary: dict[str, Any]


# --- probe -----------------------------------------------------------------------------------


def probe_video(path: Path, params: BuildParams) -> VideoInfo:
    """Checks that ``path`` is a video long enough for an avatar, reading only its packets'
    timestamps and first frame. Raises NotFoundError (no such file) or InvalidInputError (not a
    video, no video track, unreadable, too short) with a message for the person who sent it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path.name}: no such file")  # the name only: clients see it
    stat = path.stat()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InvalidInputError(
            f"{path.name} is not a video file (FFmpeg cannot read it: {_reason(e)}); send an MP4, MOV, "
            "MKV or WebM file"
        ) from e
    with container:
        if not container.streams.video:
            kind = "an audio file" if container.streams.audio else "not a video"
            raise InvalidInputError(f"{path.name} has no video track ({kind}); send a video of the person")
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        audio_codec = container.streams.audio[0].codec_context.name if has_audio else None
        codec = stream.codec_context.name
        base = stream.time_base
        _check_limits(params, container.duration, stream.frames, stream.codec_context)
        spans: list[tuple[float, float]] = []
        packets = 0
        try:
            for packet in container.demux(stream):
                # stop reading as soon as the video is over a limit: a tiny file can hold
                # hundreds of thousands of frames, and its header may say otherwise
                packets += 1
                if packet.pts is None or packet.size == 0 or base is None:
                    _check_limits(params, frames=packets)
                    continue
                spans.append((float(packet.pts * base), float((packet.duration or 0) * base)))
                if packets % 256 == 0:
                    _check_limits(params, frames=packets, seconds=spans[-1][0] - spans[0][0])
            _check_limits(params, frames=packets)
        except av.FFmpegError as e:
            if not spans:
                raise InvalidInputError(f"{path.name}: the video cannot be read ({_reason(e)})") from e
            log.warning("%s: reading stopped early (%s); using the first %d frames", path.name, e, len(spans))
        if not spans:
            raise InvalidInputError(f"{path.name}: no video frames could be read (is the file damaged?)")
        try:
            container.seek(0)
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise InvalidInputError(
                f"{path.name}: the video cannot be decoded ({codec}: {_reason(e)})"
            ) from e
        if first is None:
            raise InvalidInputError(f"{path.name}: no video frame could be decoded ({codec})")
        _check_limits(params, frame=first)
        rotation = round((first.rotation or 0) / 90) % 4 * 90
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        container_name = container.format.name

    spans.sort()
    times = np.array([t for t, _ in spans])
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    median_gap = float(np.median(gaps)) if len(gaps) else (1.0 / params.fps)
    last = spans[-1][1] or median_gap
    start, duration = float(times[0]), float(times[-1] - times[0] + last)
    # variable: a good share of the frame gaps are off the typical one by more than 10% (a
    # constant rate stored in a coarse time base jitters by a few %, a dropped frame is one gap)
    variable = bool(len(gaps) > 2 and np.percentile(np.abs(gaps / median_gap - 1), 95) > 0.1)
    info = VideoInfo(
        path=str(path.resolve()),
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        container=container_name,
        codec=codec,
        width=width,
        height=height,
        rotation=rotation,
        start_s=start,
        duration_s=duration,
        source_frames=len(spans),
        source_fps=round(len(spans) / duration, 3) if duration > 0 else 0.0,
        variable_frame_rate=variable,
        frame_interval_ms=(
            round(float(gaps.min()) * 1000, 2) if len(gaps) else 0.0,
            round(median_gap * 1000, 2),
            round(float(gaps.max()) * 1000, 2) if len(gaps) else 0.0,
        ),
        audio=has_audio,
        audio_codec=audio_codec,
    )
    _check_limits(params, seconds=duration)
    if duration < params.min_seconds:
        raise InvalidInputError(
            f"the video is {duration:.1f} s long; an avatar needs at least {params.min_seconds:g} s of "
            "footage (BuildParams.min_seconds, --min-seconds): film the person a little longer"
        )
    return info


def _reason(error: BaseException) -> str:
    """FFmpeg's reason without the file's path (which names a server folder)."""
    return str(getattr(error, "strerror", None) or type(error).__name__)


def _check_limits(
    params: BuildParams,
    container_us: int | None = None,
    frames: int | None = None,
    size: Any = None,
    *,
    seconds: float | None = None,
    frame: Any = None,
) -> None:
    """Refuses (413) a video over ``params``' limits on duration (``seconds``, or the
    container's ``container_us`` microseconds), source frames, and frame size (``size``: a
    codec context or ``frame``: a decoded frame, both with width and height)."""
    if container_us is not None and container_us > 0:
        seconds = container_us / 1_000_000
    limit_s = params.max_seconds
    if limit_s is not None and seconds is not None and seconds > limit_s:
        raise PayloadTooLargeError(
            f"the video is longer than the limit of {limit_s:g} s; send a shorter clip"
        )
    if params.max_frames is not None and frames is not None and frames > params.max_frames:
        raise PayloadTooLargeError(
            f"the video has more than the limit of {params.max_frames} frames; send a shorter clip"
        )
    picture = frame if frame is not None else size
    most = params.max_input_pixels
    if most is not None and picture is not None and picture.width * picture.height > most:
        raise PayloadTooLargeError(
            f"the video's frames are {picture.width}x{picture.height}, larger than the limit of "
            f"{most} pixels; send a smaller video"
        )


# --- progress --------------------------------------------------------------------------------


class BuildProgress:
    """tqdm bars (``progress=True``), a callback, or nothing; the callback hears about a step
    at most ~50 times plus its end, which is plenty for a progress bar in a browser."""

    def __init__(self, progress: bool | ProgressCallback) -> None:
        self._callback = progress if callable(progress) else None
        self._bars = progress is True

    @contextmanager
    def step(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        bar = tqdm(total=total, desc=name, disable=not self._bars, unit="frame" if total > 1 else "step")
        done, told = 0, -1
        every = max(1, total // 50)

        def advance(n: int = 1) -> None:
            nonlocal done, told
            done += n
            bar.update(n)
            if self._callback is not None and (done - told >= every or done >= total):
                told = done
                self._callback(name, min(done, total), total)

        if self._callback is not None:
            self._callback(name, 0, total)
        with bar:
            yield advance


# --- resumable steps -------------------------------------------------------------------------


class _Steps:
    """Markers of finished steps in ``work/steps/``: ``{"key": ..., "result": ...}``, written
    atomically after the step's files, so a marker's presence means the files were complete."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "steps"
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("result"), dict):
            return None
        return data["result"]

    def save(self, name: str, key: dict[str, Any], result: dict[str, Any]) -> None:
        save_json(self.dir / f"{name}.json", {"key": key, "result": result})

    def drop(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array, or None when it is missing, unreadable or not ``shape`` (redo the step)."""
    try:
        return load_array(path, shape)
    except InvalidInputError:
        return None


# --- audio -----------------------------------------------------------------------------------


def _read_audio(video: Path, info: VideoInfo, frame_count: int, fps: int) -> np.ndarray:
    """float32 16 kHz mono covering the avatar's frames: sample 0 is frame 0's time (the audio
    track may start a little before or after the video), padded with silence to the end."""
    import av

    pieces: list[np.ndarray] = []
    first_time: float | None = None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    total = round(frame_count / fps * SAMPLE_RATE)
    held_s = 0.0
    try:
        with av.open(str(video)) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                pieces.extend(p.to_ndarray().reshape(-1) for p in resampler.resample(frame))
                held_s += frame.samples / (frame.sample_rate or SAMPLE_RATE)
                # the audio track can be far longer than the video: keep only what is needed
                early = info.start_s - (first_time if first_time is not None else info.start_s)
                if held_s > frame_count / fps + max(0.0, early) + 1.0:
                    break
            pieces.extend(p.to_ndarray().reshape(-1) for p in resampler.resample(None))
    except av.FFmpegError as e:
        raise InvalidInputError(f"{video.name}: the audio track cannot be decoded ({_reason(e)})") from e
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    shift = round(((first_time if first_time is not None else info.start_s) - info.start_s) * SAMPLE_RATE)
    audio = np.pad(audio, (shift, 0)) if shift > 0 else audio[-shift:]
    return np.pad(audio[:total], (0, max(0, total - len(audio))))


def _audio_step(
    video: Path, info: VideoInfo, params: BuildParams, work: Path, steps: _Steps, frame_count: int
) -> tuple[dict[str, Any], bool]:
    """Writes ``work/audio.wav`` and ``work/mel.npy``; returns (result, reused)."""
    from livedh.lipsync.mel import frame_mel_windows

    key = {"step": "audio", "v": STEP_VERSION, "input": info.fingerprint(), "fps": params.fps,
           "frames": frame_count}  # fmt: skip
    wav, mel_path = work / "audio.wav", work / "mel.npy"
    done = steps.load("audio", key)
    if done is not None:
        mel_shape = tuple(done.get("mel_shape", ()))
        if (
            wav.is_file()
            and wav.stat().st_size == done.get("wav_bytes")
            and mel_path.is_file()
            and mel_path.stat().st_size == done.get("mel_bytes")
            and len(mel_shape) == 4
        ):
            return done, True
    steps.drop("audio")
    audio = _read_audio(video, info, frame_count, params.fps)
    write_wav(wav, (np.clip(audio, -1.0, 1.0) * 32767).round(), SAMPLE_RATE)
    mel = frame_mel_windows(audio, frame_count, params.fps).astype(np.float32)
    save_array(mel_path, mel)
    result = {
        "samples": len(audio),
        "duration_s": round(len(audio) / SAMPLE_RATE, 3),
        "wav_bytes": wav.stat().st_size,
        "mel_shape": list(mel.shape),
        "mel_bytes": mel_path.stat().st_size,
        # a track of pure silence is as useless for training as none
        "peak_dbfs": round(20 * np.log10(max(float(np.abs(audio).max(initial=0.0)), 1e-9)), 1),
    }
    steps.save("audio", key, result)
    return result, False


# --- faces -----------------------------------------------------------------------------------


class FaceFinder:
    """Per frame: how many faces (BlazeFace full range on a small copy of the frame) and the
    person's landmarks (FaceMesh, tracking, on a crop around the face it found last). FaceMesh's
    own detector only finds faces that fill a good part of its input, and a full-body portrait
    frame's face is small: the crop keeps it large and FaceMesh's input small (fast). When the
    face is lost, BlazeFace's box of the face nearest the last one seeds a new crop."""

    #: crop side in face sizes: room for head motion between frames
    CROP_FACES = 2.2
    #: the crop follows the face only when it drifted this far (fraction of the crop side) or
    #: changed size by more: a crop that moves every frame would shake FaceMesh's tracking
    RECENTRE = 0.08

    def __init__(self, params: BuildParams) -> None:
        import mediapipe as mp

        self._params = params
        self._blaze: Any = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=params.face_score
        )
        self._mesh = lm.FaceMeshDetector(static_image_mode=False)
        self._crop: tuple[int, int, int] | None = None  # x0, y0, side
        self._last: tuple[float, float] | None = None  # face centre

    def close(self) -> None:
        self._blaze.close()
        self._mesh.close()

    def forget(self) -> None:
        """The next frame does not follow the last one (a skipped chunk): search afresh."""
        self._crop, self._last = None, None

    def faces(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """BlazeFace boxes ``(x0, y0, x1, y1)`` in frame pixels, largest first."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self._params.detect_side / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)),
                                                     interpolation=cv2.INTER_AREA)  # fmt: skip
        result = self._blaze.process(small)
        boxes = []
        for det in result.detections or ():
            b = det.location_data.relative_bounding_box
            boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def process(self, rgb: np.ndarray, *, count: bool = True) -> tuple[np.ndarray | None, int]:
        """``(landmarks (478, 2) or None, number of faces)`` of one RGB frame; the number is -1
        (not counted) when ``count`` is False and the tracked face was not lost."""
        boxes = self.faces(rgb) if count or self._crop is None else None
        points = self._mesh_in(rgb, self._crop)
        if points is None:
            boxes = self.faces(rgb) if boxes is None else boxes
            if boxes:
                x0, y0, x1, y1 = min(boxes, key=self._distance)
                self._crop = self._square(rgb, (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0))
                points = self._mesh_in(rgb, self._crop)
            else:
                points = self._mesh.detect(rgb, search=False)  # a face filling the frame
        faces = -1
        if boxes is not None:
            largest = boxes[0][3] - boxes[0][1] if boxes else 0.0
            faces = sum(1 for b in boxes if b[3] - b[1] >= self._params.other_face_ratio * largest)
        if points is None:
            self._crop = None
            return None, faces
        self._follow(rgb, points)
        return points, faces if faces < 0 else max(faces, 1)

    def _distance(self, box: tuple[float, float, float, float]) -> float:
        if self._last is None:
            return -(box[2] - box[0]) * (box[3] - box[1])  # no face yet: the largest
        return float(np.hypot((box[0] + box[2]) / 2 - self._last[0], (box[1] + box[3]) / 2 - self._last[1]))

    def _follow(self, rgb: np.ndarray, points: np.ndarray) -> None:
        oval = points[list(lm.FACE_OVAL)]
        (x0, y0), (x1, y1) = oval.min(axis=0), oval.max(axis=0)
        cx, cy = float(x0 + x1) / 2, float(y0 + y1) / 2
        self._last = (cx, cy)
        want = self._square(rgb, cx, cy, float(max(x1 - x0, y1 - y0)))
        if self._crop is None:
            self._crop = want
            return
        ox, oy, side = self._crop
        drift = max(abs(want[0] + want[2] / 2 - ox - side / 2), abs(want[1] + want[2] / 2 - oy - side / 2))
        if drift > self.RECENTRE * side or abs(want[2] / side - 1) > 2 * self.RECENTRE:
            self._crop = want

    def _square(self, rgb: np.ndarray, cx: float, cy: float, size: float) -> tuple[int, int, int]:
        h, w = rgb.shape[:2]
        side = int(min(max(self.CROP_FACES * size, 32), h, w))
        x0 = int(np.clip(round(cx - side / 2), 0, w - side))
        y0 = int(np.clip(round(cy - side / 2), 0, h - side))
        return x0, y0, side

    def _mesh_in(self, rgb: np.ndarray, crop: tuple[int, int, int] | None) -> np.ndarray | None:
        if crop is None:
            return None
        x0, y0, side = crop
        found = self._mesh.detect(np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side]), search=False)
        return None if found is None else found + np.array([x0, y0], np.float32)


# --- frames ----------------------------------------------------------------------------------


@dataclass
class _Resampling:
    decoded: int = 0
    duplicated: int = 0
    dropped: int = 0


class _Decoder(threading.Thread):
    """Decodes the video, picks for every avatar frame ``i`` the source frame nearest its time
    ``start + i / fps``, and for the frames ``need(i)`` asks for, shrinks it and queues
    ``(i, rgb)``. A thread: PyAV's decoding and scaling release the GIL, so it runs beside the
    face models and the JPEG writer."""

    def __init__(
        self, video: Path, info: VideoInfo, params: BuildParams, need: Callable[[int], bool]
    ) -> None:
        super().__init__(name="avatar-decoder", daemon=True)
        self.video, self.info, self.params, self.need = video, info, params, need
        self.out: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=8)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.stats = _Resampling()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # handed to the main thread, which re-raises it
            self.error = e
        finally:
            self._put(None)

    def _put(self, item: tuple[int, np.ndarray] | None) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        import av

        info, params = self.info, self.params
        width, height = info.stored_size(params)
        n = info.frame_count(params)
        k = info.rotation // 90
        # before rotation, the decoded picture has the other orientation
        dw, dh = (height, width) if k % 2 else (width, height)
        index = 0

        def emit(frame: Any, rgb: np.ndarray | None) -> np.ndarray | None:
            nonlocal index
            if self.need(index):
                if rgb is None:
                    rgb = frame.to_ndarray(width=dw, height=dh, format="rgb24", interpolation="AREA")
                    rgb = np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb
                self._put((index, rgb))
            index += 1
            return rgb

        with av.open(str(self.video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            prev: Any = None
            prev_t = 0.0
            uses = 0
            rgb: np.ndarray | None = None
            try:
                for j, frame in enumerate(container.decode(stream)):
                    if self.stop.is_set() or index >= n:
                        break
                    self.stats.decoded += 1
                    # the probe read the packets, but the frames are what we hold and scale
                    _check_limits(params, frames=self.stats.decoded, frame=frame)
                    t = float(frame.time) if frame.time is not None else info.start_s + j / info.source_fps
                    if prev is not None:
                        mid = (prev_t + t) / 2  # nearer the previous frame until half-way
                        while index < n and info.start_s + index / params.fps < mid - 1e-9:
                            rgb = emit(prev, rgb)
                            uses += 1
                        self._count(uses)
                    prev, prev_t, uses, rgb = frame, t, 0, None
            except av.FFmpegError as e:
                raise InvalidInputError(
                    f"{self.video.name}: the video is damaged near frame {index} ({_reason(e)})"
                ) from e
            while prev is not None and index < n and not self.stop.is_set():
                rgb = emit(prev, rgb)  # the last frame lasts until the end
                uses += 1
            if prev is not None:
                self._count(uses)
        if index < n and not self.stop.is_set():
            raise InvalidInputError(f"{self.video.name}: only {index} of {n} frames could be decoded")

    def _count(self, uses: int) -> None:
        if uses == 0:
            self.stats.dropped += 1
        else:
            self.stats.duplicated += uses - 1


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> int:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InvalidInputError(f"cannot encode {path.name} as JPEG")
    path.write_bytes(jpeg.tobytes())
    return len(jpeg)


@dataclass
class _Chunk:
    start: int
    stop: int
    landmarks: np.ndarray  # (n, 478, 2) float32, zeros where no face
    found: np.ndarray  # (n,) bool
    faces: np.ndarray  # (n,) int: faces counted, -1 where not counted


def _frames_key(info: VideoInfo, params: BuildParams) -> dict[str, Any]:
    return {
        "step": "frames",
        "v": STEP_VERSION,
        "input": info.fingerprint(),
        "fps": params.fps,
        "size": list(info.stored_size(params)),
        "frames": info.frame_count(params),
        "jpeg_quality": params.jpeg_quality,
        "chunk_frames": params.chunk_frames,
        "faces": [params.face_score, params.other_face_ratio, params.detect_side, params.count_faces_every],
    }


def _load_chunk(
    work: Path, steps: _Steps, key: dict[str, Any], c: int, start: int, stop: int
) -> _Chunk | None:
    done = steps.load(f"chunk-{c:04d}", {**key, "chunk": [start, stop]})
    if done is None:
        return None
    sizes = done.get("jpeg_bytes")
    if not isinstance(sizes, list) or len(sizes) != stop - start:
        return None
    for i, size in zip(range(start, stop), sizes, strict=True):
        path = work / "frames" / f"{i:06d}.jpg"
        if not path.is_file() or path.stat().st_size != size:
            return None
    n = stop - start
    points = _load_npy(work / "chunks" / f"{c:04d}-landmarks.npy", (n, lm.NUM_LANDMARKS, 2))
    faces = _load_npy(work / "chunks" / f"{c:04d}-faces.npy", (n, 2))
    if points is None or faces is None:
        return None
    return _Chunk(start, stop, points.astype(np.float32), faces[:, 0] > 0, faces[:, 1].astype(int))


def _frames_step(
    video: Path,
    info: VideoInfo,
    params: BuildParams,
    work: Path,
    steps: _Steps,
    progress: BuildProgress,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[list[_Chunk], dict[str, Any], int]:
    """Frames and faces, chunk by chunk; returns (chunks, resampling report, chunks reused)."""
    n = info.frame_count(params)
    key = _frames_key(info, params)
    (work / "frames").mkdir(exist_ok=True)
    (work / "chunks").mkdir(exist_ok=True)
    bounds = [(a, min(n, a + params.chunk_frames)) for a in range(0, n, params.chunk_frames)]
    chunks: dict[int, _Chunk] = {}
    for c, (a, b) in enumerate(bounds):
        loaded = _load_chunk(work, steps, key, c, a, b)
        if loaded is not None:
            chunks[c] = loaded
    reused = len(chunks)
    resampling = steps.load("frames", key)
    if reused == len(bounds) and resampling is not None:
        return [chunks[c] for c in range(len(bounds))], resampling, reused

    todo = [c for c in range(len(bounds)) if c not in chunks]
    for c in todo:  # their files are about to be rewritten: no marker may vouch for them
        steps.drop(f"chunk-{c:04d}")
    steps.drop("frames")
    todo_set = set(todo)
    decoder = _Decoder(video, info, params, lambda i: i // params.chunk_frames in todo_set)
    decoder.start()  # decodes while the face models load
    # JPEG encoding in a third thread: with decoding and the face models that balances the work
    # over two cores (cv2 releases the GIL while encoding)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-jpeg")
    quality = params.jpeg_quality
    finder: FaceFinder | None = None
    try:
        finder = FaceFinder(params)
        with progress.step("frames", n) as advance:
            advance(sum(b - a for c, (a, b) in enumerate(bounds) if c in chunks))
            previous = -1
            for c in todo:
                a, b = bounds[c]
                if c != previous + 1:
                    finder.forget()
                previous = c
                points = np.zeros((b - a, lm.NUM_LANDMARKS, 2), np.float32)
                faces = np.zeros((b - a, 2), np.int32)
                sizes: list[Future[int]] = []
                for i in range(a, b):
                    item = decoder.out.get()
                    if item is None:
                        raise decoder.error or InvalidInputError(
                            f"{video.name}: decoding stopped at frame {i}"
                        )
                    index, rgb = item
                    assert index == i, (index, i)  # the decoder emits in order
                    found, count = finder.process(rgb, count=i % params.count_faces_every == 0)
                    if found is not None:
                        points[i - a] = found
                    faces[i - a] = (found is not None, count)
                    if len(sizes) >= 8:  # bounded: frames waiting for the writer hold memory
                        sizes[-8].result()
                    sizes.append(writer.submit(_write_jpeg, work / "frames" / f"{i:06d}.jpg", rgb, quality))
                    advance(1)
                save_array(work / "chunks" / f"{c:04d}-landmarks.npy", points)
                save_array(work / "chunks" / f"{c:04d}-faces.npy", faces)
                jpeg_bytes = [f.result() for f in sizes]  # written before the marker vouches for them
                steps.save(f"chunk-{c:04d}", {**key, "chunk": [a, b]}, {"jpeg_bytes": jpeg_bytes})
                chunks[c] = _Chunk(a, b, points, faces[:, 0] > 0, faces[:, 1].astype(int))
                if on_chunk is not None:
                    on_chunk(c)
        # drain: the decoder may still be walking to the end for the resampling counts
        while (item := decoder.out.get()) is not None:
            pass
        decoder.join()
        if decoder.error is not None:
            raise decoder.error
    finally:
        decoder.stop.set()
        decoder.join(timeout=10)
        writer.shutdown(wait=True, cancel_futures=True)
        if finder is not None:
            finder.close()
    report = asdict(decoder.stats)
    steps.save("frames", key, report)
    return [chunks[c] for c in range(len(bounds))], report, reused


# --- checks ----------------------------------------------------------------------------------


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def check_faces(
    found: np.ndarray, faces: np.ndarray, face_px: float | None, size: tuple[int, int], params: BuildParams
) -> None:
    """Refuses footage the renderer cannot use, saying why and what to do."""
    n = len(found)
    missing = 1 - float(found.mean()) if n else 1.0
    if missing > params.max_missing_face_fraction:
        where = "any frame" if missing >= 1 else f"{_pct(missing)} of the frames"
        raise InvalidInputError(
            f"no face found in {where} (at most {_pct(params.max_missing_face_fraction)} allowed): "
            "film the person facing the camera, well lit, the whole face in the picture and not too "
            "small"
        )
    counted = int((faces >= 0).sum())
    several = float((faces >= 2).sum() / counted) if counted else 0.0
    if several > params.max_several_faces_fraction:
        raise InvalidInputError(
            f"2 or more faces in {_pct(several)} of the frames (at most "
            f"{_pct(params.max_several_faces_fraction)} allowed): only the person should be in the picture"
        )
    if face_px is not None and face_px < params.min_face_px:
        raise InvalidInputError(
            f"the face is only {face_px:.0f} px tall (median, forehead to chin, in frames of "
            f"{size[0]}x{size[1]}); it must be at least {params.min_face_px:.0f} px: film closer or use a "
            "higher resolution (--max-side keeps more of it)"
        )


# --- the build -------------------------------------------------------------------------------


@contextmanager
def _exclusive(avatars_dir: Path, name: str) -> Iterator[None]:
    """One build per avatar name at a time (two would write the same work folder)."""
    fd = os.open(avatars_dir / f".{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ConflictError(
                f"avatar {name!r} is already being built; wait for that build to finish"
            ) from e
        yield
    finally:
        os.close(fd)  # closing releases the lock


def work_dir(avatars_dir: Path, name: str) -> Path:
    """Where the build of ``name`` keeps its resumable steps."""
    return Path(avatars_dir) / f".{name}.work"


def discard_unfinished(avatars_dir: Path, name: str) -> bool:
    """Removes what a killed build of ``name`` left behind: its work folder, lock file and
    half-written avatar folders (``building()``'s temps), putting back a previous avatar that
    was moved aside when the kill came mid-swap. Returns False, touching nothing, while
    another process holds the build's lock."""
    avatars_dir = Path(avatars_dir)
    check_name(name)
    if not avatars_dir.is_dir():
        return True
    lock = avatars_dir / f".{name}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(work_dir(avatars_dir, name), ignore_errors=True)
        # exactly mkdtemp's names, so another avatar's files (names may hold dots) never match
        temp = re.compile(rf"\.{re.escape(name)}\.(build|old)-[A-Za-z0-9_]{{8}}")
        final = avatars_dir / name
        for path in sorted(avatars_dir.iterdir()):
            if not temp.fullmatch(path.name):
                continue
            if path.name.startswith(f".{name}.old-") and (path / "avatar").is_dir() and not final.exists():
                os.replace(path / "avatar", final)
            shutil.rmtree(path, ignore_errors=True)
        lock.unlink(missing_ok=True)  # while we hold it, so no running build loses its lock
    finally:
        os.close(fd)
    return True


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the work folder sits next to the avatar: same file system, no copy
    except OSError:
        shutil.copyfile(src, dst)


def build_avatar(
    video: Path,
    name: str,
    avatars_dir: Path,
    params: BuildParams | None = None,
    *,
    progress: bool | ProgressCallback = True,
    restart: bool = False,
    license: str = "unknown (provided by the user)",
    source: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    actions: Sequence[ActionSpec] = (),
) -> BuildResult:
    """Builds ``avatars_dir/name`` from the video file ``video`` (see the module docstring), and
    returns its manifest and summary. Bad input raises InvalidInputError (or NotFoundError for a
    missing file) with a message for the person who filmed it. ``restart`` ignores the work of
    an earlier, unfinished build. ``source`` describes the footage in the manifest (default: the
    file's name). ``on_chunk(c)`` is called after each frames chunk is saved
    (tests use it to crash a build half-way). ``actions``: named action clips of the motion
    graph (``params.motion``), see livedh/avatar/motion_build.py."""
    params = params or BuildParams()
    started = time.monotonic()
    video, avatars_dir = Path(video), Path(avatars_dir)
    check_name(name)
    check_model(params.model)
    if params.fps <= 0 or params.max_side < 16 or params.chunk_frames <= 0 or params.count_faces_every <= 0:
        raise InvalidInputError(f"bad build parameters: {params}")
    if actions and not params.motion:
        raise InvalidInputError("actions are part of the motion graph: drop --no-motion or the --action")
    report = BuildProgress(progress)
    seconds: dict[str, float] = {}

    with report.step("probe", 1) as advance:
        info = probe_video(video, params)
        advance(1)
    seconds["probe"] = time.monotonic() - started
    for action in actions:  # refuse a range outside the video now, not after the long steps
        if action.end_s is not None and action.end_s > info.duration_s + 0.5 / params.fps:
            raise InvalidInputError(
                f"action {action.name!r}: {action.start_s:g}-{action.end_s:g} s is outside the video "
                f"(0-{info.duration_s:.2f} s)"
            )
    avatars_dir.mkdir(parents=True, exist_ok=True)
    work = work_dir(avatars_dir, name)
    with _exclusive(avatars_dir, name):
        if restart:
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(exist_ok=True)
        steps = _Steps(work)
        try:
            result = _build(video, name, avatars_dir, params, info, work, steps, report, seconds, started,
                            license, source or f"user video {video.name}", on_chunk)  # fmt: skip
        except InvalidInputError:
            # the input is unusable: nothing to resume
            shutil.rmtree(work, ignore_errors=True)
            raise
        if params.motion:
            # after the avatar is written: a failed action leaves a working avatar and the work
            # (poses cached in it) for the next run
            result = _motion_step(result, params, actions, report, work)
        shutil.rmtree(work, ignore_errors=True)
    return result


def _motion_step(
    result: BuildResult, params: BuildParams, actions: Sequence[ActionSpec], report: BuildProgress, work: Path
) -> BuildResult:
    from livedh.avatar.format import load_manifest
    from livedh.avatar.motion_build import build_motion

    t = time.monotonic()
    motion = build_motion(
        result.path, actions=actions, pose_stride=params.pose_stride, progress=report, cache_dir=work
    )
    summary = {**result.summary, "motion": motion.summary}
    summary["seconds"] = {**summary["seconds"], "motion": round(time.monotonic() - t, 3)}
    save_json(result.path / "summary.json", summary)
    return BuildResult(result.path, load_manifest(result.path), summary)


def _build(
    video: Path,
    name: str,
    avatars_dir: Path,
    params: BuildParams,
    info: VideoInfo,
    work: Path,
    steps: _Steps,
    report: BuildProgress,
    seconds: dict[str, float],
    started: float,
    license: str,
    source: str,
    on_chunk: Callable[[int], None] | None,
) -> BuildResult:
    n = info.frame_count(params)
    width, height = info.stored_size(params)

    t = time.monotonic()
    audio: dict[str, Any] | None = None
    audio_reused = False
    if info.audio:
        with report.step("audio", 1) as advance:
            audio, audio_reused = _audio_step(video, info, params, work, steps, n)
            advance(1)
    else:
        log.warning("%s has no audio track: the avatar can be streamed but not trained", video.name)
    seconds["audio"] = time.monotonic() - t

    t = time.monotonic()
    chunks, resampling, chunks_reused = _frames_step(
        video, info, params, work, steps, report, on_chunk=on_chunk
    )
    seconds["frames"] = time.monotonic() - t
    found = np.concatenate([c.found for c in chunks])
    faces = np.concatenate([c.faces for c in chunks])
    all_points = np.concatenate([c.landmarks for c in chunks])
    heights = np.array([lm.face_height(p) for p in all_points[found]])
    face_px = float(np.median(heights)) if len(heights) else None
    check_faces(found, faces, face_px, (width, height), params)
    landmarks, missing = interpolate_missing(
        [p if f else None for p, f in zip(all_points, found, strict=True)]
    )
    if missing:
        log.warning("no face in %d of %d frames; their landmarks are interpolated", len(missing), n)
    several = [int(i) for i in np.flatnonzero(faces >= 2)]
    with_face = np.flatnonzero(found)
    preview = int(with_face[np.argmin(np.abs(with_face - n // 2))])

    def frame_path(i: int) -> Path:
        return work / "frames" / f"{i:06d}.jpg"

    def extra(tmp: Path) -> None:
        if audio is not None:
            _link(work / "audio.wav", tmp / "audio.wav")
            (tmp / "features").mkdir()
            _link(work / "mel.npy", tmp / "features" / "mel.npy")

    summary: dict[str, Any] = {
        "landmarks": "FaceMesh",
        "source": {
            "file": video.name,
            "bytes": info.size_bytes,
            "container": info.container,
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "fps": info.source_fps,
            "duration_s": round(info.duration_s, 3),
            "frames": info.source_frames,
            "variable_frame_rate": info.variable_frame_rate,
            "frame_interval_ms": list(info.frame_interval_ms),
            "audio_codec": info.audio_codec,
        },
        "resampling": resampling,
        "audio": audio is not None,
        "audio_duration_s": audio["duration_s"] if audio else None,
        "audio_peak_dbfs": audio["peak_dbfs"] if audio else None,
        "face": {
            "height_px_median": round(face_px or 0.0, 1),
            "height_px_min": round(float(heights.min()), 1),
            "height_px_max": round(float(heights.max()), 1),
            "frames_with_face": int(found.sum()),
            "fraction": round(float(found.mean()), 4),
            "frames_counted": int((faces >= 0).sum()),
            "frames_with_several_faces": len(several),
        },
        "frames_without_face": missing,
        "rejected_frames": {"no_face": missing, "several_faces": several},
        "preview_frame": preview,
        "steps": {
            "audio": None if audio is None else ("reused" if audio_reused else "built"),
            "frames_chunks_reused": chunks_reused,
            "frames_chunks_built": len(chunks) - chunks_reused,
        },
        "params": asdict(params),
    }

    t = time.monotonic()
    with report.step("assemble", n) as advance:
        manifest, final = assemble_video_avatar(
            avatars_dir / name,
            AvatarFrames(width=width, height=height, count=n, put=lambda i, path: _link(frame_path(i), path)),
            fps=params.fps,
            name=name,
            landmarks=landmarks,
            model=params.model,
            params=params.video,
            preview_index=preview,
            summary=summary,
            started=started,
            source=source,
            license=license,
            progress=lambda done, total: advance(1),
            extra=extra,
            timings=lambda: {**{k: round(v, 3) for k, v in seconds.items()},
                             "assemble": round(time.monotonic() - t, 3)},
            source_duration_s=info.duration_s,
        )  # fmt: skip
    log.info(
        "built avatar %s: %d frames %dx%d, face in %s of frames, %.1f s for %.1f s of video",
        name, n, width, height, _pct(float(found.mean())), final["seconds"]["total"], info.duration_s,
    )  # fmt: skip
    return BuildResult(avatars_dir / name, manifest, final)
