"""Trains an avatar's own Ultralight model on its frames and audio, with a SyncNet for lip sync.

Two phases, one checkpoint:

1. the SyncNet learns, on the avatar's real frames, to tell a mouth saying its audio from one
   whose audio comes from at least 5 frames away (``syncnet.py``);
2. the generator learns to redraw the masked face from a reference face (a random other frame,
   as Ultralight trains: at run time the reference is whatever footage frame is playing, so it
   says nothing about the audio) and the audio: L1 against the real crop, weighted up in the
   mouth box, plus, once it draws faces (after ``sync_warmup`` of the steps), the frozen
   SyncNet's loss on 5 consecutive generated frames (Wav2Lip's expert sync loss, weight 0.03).

Network inputs are built exactly as ``UltralightGenerator.generate`` builds them (BGR in
[0, 1], reference then the current face with ``MASK_RECT`` zeroed), on the crops the renderer
cuts. Every step draws its samples from a generator seeded with (seed, phase, step), so a
resumed run draws what an uninterrupted one would have.

The checkpoint (``avatars/NAME/training/checkpoint.pt``) is written atomically every
``checkpoint_every`` steps, at the end and on Ctrl-C; a re-run resumes from it. The exported
weights (``avatars/NAME/weights/ultralight.pth``) are what ``--model ultralight --avatar NAME``
loads.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from livedh.avatar.format import load_manifest
from livedh.errors import InvalidInputError, NotConfiguredError
from livedh.files import atomic_file
from livedh.lipsync.checkpoints import save_ultralight
from livedh.lipsync.nets.ultralight import MASK_RECT, SIZE, Ultralight, UltralightConfig
from livedh.lipsync.training import syncnet as sn
from livedh.lipsync.training.data import WINDOW, TrainingData, check_trainable, load_training_data

log = logging.getLogger(__name__)

TrainDevice = Literal["auto", "cpu", "cuda"]
Channels = tuple[int, int, int, int, int]
CHECKPOINT = "training/checkpoint.pt"
WEIGHTS = "weights/ultralight.pth"
REPORT = "weights/train_report.json"
CHECKPOINT_FORMAT = 1
#: Ultralight's own width on a GPU; its "mobile" width on a CPU, ~4x cheaper per step
GPU_CHANNELS: Channels = (32, 64, 128, 256, 512)
CPU_CHANNELS: Channels = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. ``None`` fields take a default for the device (and ``quick``):
    see ``TrainConfig.settings``."""

    #: generator steps (None: 6000; quick: 4)
    steps: int | None = None
    #: SyncNet steps, before the generator's (None: 3000; quick: 4)
    syncnet_steps: int | None = None
    #: 5-frame windows per generator step (None: 16 on CUDA, 2 on CPU; quick: 1)
    batch_size: int | None = None
    #: in-sync windows per SyncNet step, each paired with a shifted one (None: 64 / 32; quick: 2)
    syncnet_batch_size: int | None = None
    lr: float = 1e-3
    syncnet_lr: float = 5e-4
    #: last fraction of the clip held out for the report
    holdout: float = 0.1
    #: weight of the SyncNet loss in the generator's loss (Wav2Lip: 0.03)
    sync_weight: float = 0.03
    #: fraction of the generator steps before the sync loss joins (it needs faces to judge)
    sync_warmup: float = 0.25
    #: extra L1 weight inside the mouth box (1: the mouth counts double)
    mouth_weight: float = 1.0
    #: Ultralight widths (None: the checkpoint's, else GPU_CHANNELS on CUDA, CPU_CHANNELS on CPU)
    channels: Channels | None = None
    #: SyncNet's first-layer width (None: the checkpoint's, else 32 on CUDA, 16 on CPU)
    syncnet_width: int | None = None
    device: TrainDevice = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    #: a few steps with a tiny batch: a smoke test of the whole pipeline, not a usable model
    quick: bool = False
    #: torch CPU threads (None: torch's default, one per core)
    threads: int | None = None
    progress: bool = True
    #: evaluate on the held-out frames at the end (a few seconds of rendering and FaceMesh)
    report: bool = True


@dataclass(frozen=True)
class TrainSettings:
    """A TrainConfig with every default filled in for a device."""

    steps: int
    syncnet_steps: int
    batch_size: int
    syncnet_batch_size: int
    lr: float
    syncnet_lr: float
    holdout: float
    sync_weight: float
    sync_warmup: float
    mouth_weight: float
    channels: Channels
    syncnet_width: int
    seed: int
    checkpoint_every: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def settings_for(
    config: TrainConfig, device: torch.device, saved: dict[str, Any] | None = None
) -> TrainSettings:
    """``config`` with its defaults for ``device``. ``saved``: a checkpoint's settings, whose
    network widths fill in those ``config`` leaves as None (so a resume needs no options)."""
    cuda = device.type == "cuda"
    quick = config.quick

    def pick(value: int | None, quick_value: int, gpu: int, cpu: int) -> int:
        if value is not None:
            return value
        return quick_value if quick else (gpu if cuda else cpu)

    settings = TrainSettings(
        steps=pick(config.steps, 4, 6000, 6000),
        syncnet_steps=pick(config.syncnet_steps, 4, 3000, 3000),
        batch_size=pick(config.batch_size, 1, 16, 2),
        syncnet_batch_size=pick(config.syncnet_batch_size, 2, 64, 32),
        lr=config.lr,
        syncnet_lr=config.syncnet_lr,
        holdout=config.holdout,
        sync_weight=config.sync_weight,
        sync_warmup=config.sync_warmup,
        mouth_weight=config.mouth_weight,
        channels=config.channels
        or (tuple(saved["channels"]) if saved else None)
        or (GPU_CHANNELS if cuda else CPU_CHANNELS),
        syncnet_width=config.syncnet_width
        or (int(saved["syncnet_width"]) if saved else None)
        or (32 if cuda else 16),
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
    )
    for name in ("steps", "syncnet_steps"):
        if getattr(settings, name) < 0:
            raise InvalidInputError(f"{name} must be >= 0, got {getattr(settings, name)}")
    for name in ("batch_size", "syncnet_batch_size", "checkpoint_every"):
        if getattr(settings, name) < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {getattr(settings, name)}")
    return settings


def pick_device(device: TrainDevice) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NotConfiguredError("--device cuda was asked for but torch sees no CUDA GPU")
    if device not in ("cpu", "cuda"):
        raise InvalidInputError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


@dataclass
class TrainResult:
    avatar_dir: Path
    weights: Path
    checkpoint: Path
    settings: TrainSettings
    device: str
    #: generator / SyncNet step the run started from (0 unless it resumed)
    resumed_from: int
    resumed_syncnet_from: int
    #: held-out report (report.py), with the training figures under "training"
    report: dict[str, Any] = field(default_factory=dict)


# --- network inputs --------------------------------------------------------------------------


def to_bgr(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (..., S, S, 3) RGB -> float32 (..., 3, S, S) BGR in [0, 1], as the generators'
    ``_bgr_planes`` (same multiply by the float32 1/255, so identical values)."""
    # contiguous: a channels-last view would run the whole network in that layout, ~10x slower
    # on CPU for Ultralight's depthwise convolutions
    x = crops.movedim(-1, -3).flip(-3).float().contiguous()
    return x * torch.tensor(1 / 255, dtype=torch.float32)


def ultralight_inputs(crops: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 160, 160, 3) RGB current and reference crops -> float32 (B, 6, 160, 160): the
    input ``UltralightGenerator.generate`` builds (reference, then the current face with
    ``MASK_RECT`` zeroed)."""
    top, bottom, left, right = MASK_RECT
    current = to_bgr(crops).clone()
    current[:, :, top:bottom, left:right] = 0.0
    return torch.cat([to_bgr(references), current], dim=1)


def mouth_weights(boxes: torch.Tensor, extra: float) -> torch.Tensor:
    """(B, 4) crop-pixel mouth boxes -> (B, 1, S, S) L1 weights: 1, plus ``extra`` inside."""
    centres = torch.arange(SIZE, device=boxes.device, dtype=torch.float32) + 0.5
    cols = (centres >= boxes[:, 0:1]) & (centres < boxes[:, 2:3])  # (B, S)
    rows = (centres >= boxes[:, 1:2]) & (centres < boxes[:, 3:4])
    inside = rows[:, :, None] & cols[:, None, :]
    return (1.0 + extra * inside.float())[:, None]


# --- the run ---------------------------------------------------------------------------------


@dataclass
class _State:
    generator: Ultralight
    syncnet: sn.SyncNet
    g_opt: torch.optim.Optimizer
    s_opt: torch.optim.Optimizer
    step: int = 0
    syncnet_step: int = 0
    #: cumulative training seconds over every run (resumes included)
    seconds: dict[str, float] = field(default_factory=lambda: {"syncnet": 0.0, "generator": 0.0})
    losses: dict[str, float] = field(default_factory=dict)


class _Tensors:
    """The training data on the device (crops as uint8: a quarter of float32's memory)."""

    def __init__(self, data: TrainingData, device: torch.device) -> None:
        self.crops = torch.from_numpy(data.crops).to(device)
        self.mels = torch.from_numpy(data.mels).to(device)
        self.mouth = torch.from_numpy(data.mouth_boxes).to(device)
        self.starts = data.train_window_starts()
        self.train_frames = data.train_frames
        self.device = device

    def index(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)


def train_avatar(avatar_dir: Path, config: TrainConfig, *, restart: bool = False) -> TrainResult:
    """Trains (or resumes training) ``avatar_dir``'s Ultralight model, exports its weights and
    writes the held-out report. Raises NotFoundError / InvalidInputError with what to do."""
    from livedh.lipsync.training.report import evaluate_holdout

    avatar_dir = Path(avatar_dir)
    check_trainable(avatar_dir)  # before anything slow
    device = pick_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    checkpoint_path = avatar_dir / CHECKPOINT
    saved = None if restart else _load_checkpoint(checkpoint_path, avatar_dir)
    settings = settings_for(config, device, saved["settings"] if saved else None)
    data = load_training_data(avatar_dir, settings.holdout, progress=config.progress)
    if saved is not None:
        saved = _check_compatible(saved, settings, data, checkpoint_path)

    torch.manual_seed(settings.seed)
    generator = Ultralight(UltralightConfig(channels=settings.channels)).to(device)
    syncnet = sn.SyncNet(settings.syncnet_width).to(device)
    state = _State(
        generator,
        syncnet,
        torch.optim.Adam(generator.parameters(), lr=settings.lr),
        torch.optim.Adam(syncnet.parameters(), lr=settings.syncnet_lr),
    )
    if saved is not None:
        _restore(state, saved)
        log.info("resuming %s from SyncNet step %d, generator step %d", checkpoint_path,
                 state.syncnet_step, state.step)
    resumed_from, resumed_syncnet_from = state.step, state.syncnet_step

    tensors = _Tensors(data, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels

    def save() -> None:
        _save_checkpoint(checkpoint_path, state, settings, data)

    try:
        _train_syncnet(state, tensors, settings, cuda, save, progress=config.progress)
        _train_generator(state, tensors, settings, cuda, save, progress=config.progress)
    except KeyboardInterrupt:
        save()
        log.warning("interrupted: progress saved to %s; run the command again to resume", checkpoint_path)
        raise
    save()

    generator.eval()
    syncnet.eval()
    weights = avatar_dir / WEIGHTS
    save_ultralight(generator, weights)
    report = evaluate_holdout(data, generator, syncnet, device, seed=settings.seed) if config.report else {}
    frames_seen = state.step * settings.batch_size * WINDOW
    report["training"] = {
        "device": str(device) if not cuda else f"cuda ({torch.cuda.get_device_name(device)})",
        "steps": state.step,
        "syncnet_steps": state.syncnet_step,
        "batch_size_windows": settings.batch_size,
        "frames_per_step": settings.batch_size * WINDOW,
        "channels": list(settings.channels),
        "train_frames": data.train_frames,
        "epochs": round(frames_seen / max(data.train_frames, 1), 2),
        "resumed_from_step": resumed_from,
        "seconds": {k: round(v, 2) for k, v in state.seconds.items()},
        "generator_samples_per_s": round(frames_seen / max(state.seconds["generator"], 1e-9), 2)
        if state.step
        else 0.0,
        "final_losses": {k: round(v, 5) for k, v in state.losses.items()},
        "settings": settings.to_dict(),
    }
    _write_report(avatar_dir / REPORT, report)
    return TrainResult(
        avatar_dir, weights, checkpoint_path, settings, str(device), resumed_from, resumed_syncnet_from,
        report,
    )


def _rng(settings: TrainSettings, phase: int, step: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, phase, step])


def _autocast(cuda: bool) -> Any:
    # bf16 on CUDA: fp32's range (no loss scaling), tensor-core speed
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)


def _steps(start: int, stop: int, desc: str, progress: bool) -> Iterator[tuple[int, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=stop, initial=start, desc=desc, disable=not progress or stop <= start)
    try:
        for step in range(start, stop):
            yield step, bar
            bar.update(1)
    finally:
        bar.close()


def _shifted_picks(rng: np.random.Generator, picks: np.ndarray, count: int) -> np.ndarray:
    """For each of ``picks`` (indices into the ``count`` window starts) another pick at least
    WINDOW frames away: audio that does not belong to the faces."""
    offsets = rng.integers(WINDOW, count - WINDOW + 1, size=len(picks))  # circular distance >= WINDOW
    return (picks + offsets) % count


def sync_batch(
    tensors: _Tensors, rng: np.random.Generator, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SyncNet inputs: ``batch`` in-sync windows then the same faces with shifted audio."""
    picks = rng.integers(0, len(tensors.starts), size=batch)
    shifted = _shifted_picks(rng, picks, len(tensors.starts))
    starts = tensors.starts[picks]
    frames = tensors.index(starts[:, None] + np.arange(WINDOW))
    faces = sn.sync_faces(to_bgr(tensors.crops[frames]))
    middle = WINDOW // 2
    mels = tensors.mels[tensors.index(np.concatenate([starts, tensors.starts[shifted]]) + middle)]
    labels = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(tensors.device)
    return torch.cat([faces, faces]), mels, labels


def _train_syncnet(
    state: _State,
    tensors: _Tensors,
    settings: TrainSettings,
    cuda: bool,
    save: Callable[[], None],
    *,
    progress: bool,
) -> None:
    if state.syncnet_step >= settings.syncnet_steps:
        return
    syncnet = state.syncnet.train()
    started = time.monotonic()
    for step, bar in _steps(state.syncnet_step, settings.syncnet_steps, "SyncNet", progress):
        faces, mels, labels = sync_batch(tensors, _rng(settings, 0, step), settings.syncnet_batch_size)
        with _autocast(cuda):
            logits = syncnet(faces, mels)
        loss = sn.sync_loss(logits, labels)
        state.s_opt.zero_grad(set_to_none=True)
        loss.backward()
        state.s_opt.step()
        state.syncnet_step = step + 1
        if step % 10 == 0 or state.syncnet_step == settings.syncnet_steps:
            accuracy = ((logits.detach() > 0).float() == labels).float().mean()
            state.losses["syncnet"] = float(loss.detach())
            state.losses["syncnet_accuracy"] = float(accuracy)
            bar.set_postfix(loss=f"{state.losses['syncnet']:.3f}", acc=f"{float(accuracy):.2f}")
        if state.syncnet_step % settings.checkpoint_every == 0:
            started = _count_and_save(state, "syncnet", started, save)
    state.seconds["syncnet"] += time.monotonic() - started


def _count_and_save(state: _State, phase: str, started: float, save: Callable[[], None]) -> float:
    """Add the time since ``started`` to ``phase``'s training seconds (so a checkpoint carries
    them), save, and return the new start: the saving counts towards the next stretch."""
    now = time.monotonic()
    state.seconds[phase] += now - started
    save()
    return now


def generator_batch(
    tensors: _Tensors, rng: np.random.Generator, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generator inputs for ``batch`` 5-frame windows, frames in time order per window:
    (faces (5B, 6, S, S), mels (5B, 1, 80, 16), targets (5B, 3, S, S) BGR, frame indices)."""
    starts = tensors.starts[rng.integers(0, len(tensors.starts), size=batch)]
    frames = (starts[:, None] + np.arange(WINDOW)).reshape(-1)
    # a reference that is never the frame itself, or the network would copy its mouth
    references = (frames + rng.integers(1, tensors.train_frames, size=len(frames))) % tensors.train_frames
    idx = tensors.index(frames)
    crops = tensors.crops[idx]
    faces = ultralight_inputs(crops, tensors.crops[tensors.index(references)])
    return faces, tensors.mels[idx], to_bgr(crops), idx


def _lr_factor(step: int, steps: int) -> float:
    # cosine from 1 to 0.05 over the run: a fixed budget ends on small, careful steps
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))


def _train_generator(
    state: _State,
    tensors: _Tensors,
    settings: TrainSettings,
    cuda: bool,
    save: Callable[[], None],
    *,
    progress: bool,
) -> None:
    if state.step >= settings.steps:
        return
    generator = state.generator.train()
    syncnet = state.syncnet.eval()  # frozen judge: BatchNorm on its running statistics
    syncnet.requires_grad_(False)
    sync_from = int(settings.sync_warmup * settings.steps)
    middle = WINDOW // 2
    started = time.monotonic()
    for step, bar in _steps(state.step, settings.steps, "generator", progress):
        rng = _rng(settings, 1, step)
        faces, mels, targets, idx = generator_batch(tensors, rng, settings.batch_size)
        for group in state.g_opt.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, settings.steps)
        with _autocast(cuda):
            out = generator(faces, mels)
        out = out.float()
        weights = mouth_weights(tensors.mouth[idx], settings.mouth_weight)
        l1 = ((out - targets).abs() * weights).mean() / weights.mean()
        loss = l1
        sync = torch.zeros(())
        if settings.sync_weight > 0 and step >= sync_from:
            windows = out.reshape(settings.batch_size, WINDOW, 3, SIZE, SIZE)
            with _autocast(cuda):
                logits = syncnet(sn.sync_faces(windows), mels.reshape(settings.batch_size, WINDOW, 1, 80, 16)[
                    :, middle])
            sync = sn.sync_loss(logits, torch.ones_like(logits))
            loss = loss + settings.sync_weight * sync
        state.g_opt.zero_grad(set_to_none=True)
        loss.backward()
        state.g_opt.step()
        state.step = step + 1
        if step % 10 == 0 or state.step == settings.steps:
            state.losses["l1"] = float(l1.detach())
            state.losses["sync"] = float(sync.detach())
            bar.set_postfix(l1=f"{state.losses['l1']:.4f}", sync=f"{state.losses['sync']:.3f}")
        if state.step % settings.checkpoint_every == 0:
            started = _count_and_save(state, "generator", started, save)
    state.seconds["generator"] += time.monotonic() - started
    syncnet.requires_grad_(True)


# --- checkpoints and weights -----------------------------------------------------------------


def _save_checkpoint(path: Path, state: _State, settings: TrainSettings, data: TrainingData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "syncnet_version": sn.VERSION,
        "avatar_created": data.avatar.manifest.created,
        "frame_count": data.frame_count,
        "holdout_start": data.holdout_start,
        "settings": settings.to_dict(),
        "step": state.step,
        "syncnet_step": state.syncnet_step,
        "seconds": dict(state.seconds),
        "losses": dict(state.losses),
        "generator": _cpu(state.generator.state_dict()),
        "syncnet": _cpu(state.syncnet.state_dict()),
        "generator_optimizer": state.g_opt.state_dict(),
        "syncnet_optimizer": state.s_opt.state_dict(),
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _load_checkpoint(path: Path, avatar_dir: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say so, never trust it
        raise InvalidInputError(
            f"{path} cannot be loaded ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            "delete it or pass --restart"
        ) from exc
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(f"{path} is not a livedh training checkpoint of this version; pass --restart")
    if saved.get("syncnet_version") != sn.VERSION:
        log.warning("%s holds an older SyncNet; starting over", path)
        return None
    created = load_manifest(avatar_dir).created
    if saved.get("avatar_created") != created:
        log.warning("the avatar was rebuilt since %s was written; starting over", path)
        return None
    return saved


def _check_compatible(
    saved: dict[str, Any], settings: TrainSettings, data: TrainingData, path: Path
) -> dict[str, Any] | None:
    """Raises InvalidInputError when ``settings`` cannot continue ``saved``; None (start over,
    with a warning) when the avatar changed under it."""
    if saved.get("frame_count") != data.frame_count:
        log.warning("the avatar's frames changed since %s was written; starting over", path)
        return None
    theirs = saved["settings"]
    for key, mine in (("channels", list(settings.channels)), ("syncnet_width", settings.syncnet_width)):
        if theirs[key] != mine:
            raise InvalidInputError(
                f"{path} was trained with {key} {theirs[key]}, not {mine}: resume with the same "
                f"{key}, or pass --restart to start over"
            )
    if saved.get("holdout_start") != data.holdout_start:
        raise InvalidInputError(
            f"{path} was trained with holdout {theirs['holdout']} (frames from "
            f"{saved.get('holdout_start')} held out), not {settings.holdout}: resume with "
            f"--holdout {theirs['holdout']}, or pass --restart to start over"
        )
    return saved


def _restore(state: _State, saved: dict[str, Any]) -> None:
    state.generator.load_state_dict(saved["generator"])
    state.syncnet.load_state_dict(saved["syncnet"])
    state.g_opt.load_state_dict(saved["generator_optimizer"])
    state.s_opt.load_state_dict(saved["syncnet_optimizer"])
    state.step = int(saved["step"])
    state.syncnet_step = int(saved["syncnet_step"])
    state.seconds = {k: float(v) for k, v in saved.get("seconds", {}).items()} or state.seconds
    state.seconds.setdefault("syncnet", 0.0)
    state.seconds.setdefault("generator", 0.0)
    state.losses = {k: float(v) for k, v in saved.get("losses", {}).items()}


def _write_report(path: Path, report: dict[str, Any]) -> None:
    from livedh.avatar.format import save_json

    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, report)


def with_defaults(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with ``changes`` that are not None (command-line options left out)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})

