"""Run a face network on a batch: PyTorch (CPU fp32, CUDA fp16 with optional CUDA graphs) or
ONNX Runtime (CUDA when available, else CPU), behind one ``run(faces, audio)``.

Every face network here takes ``(faces, audio)`` and returns faces: float32 numpy in and out, so
generators do not care which runtime they drive.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from livedh.errors import MissingDependencyError, ModelFileError, NotConfiguredError

RuntimeKind = Literal["torch", "onnx"]
Device = Literal["cpu", "cuda"]


class FaceRuntime(ABC):
    @abstractmethod
    def run(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """faces: float32 (B, C, S, S); audio: float32 (B, ...). Returns float32 (B, 3, S, S).
        Blocking; one caller at a time."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model. Idempotent."""


@dataclass(frozen=True)
class RuntimeConfig:
    kind: RuntimeKind = "torch"
    device: Device = "cpu"
    #: fp16 weights and activations; None: on CUDA only (CPU fp16 convolutions are slow)
    half: bool | None = None
    #: batch sizes to capture as CUDA graphs (torch on CUDA only; others run eagerly)
    cuda_graph_batches: tuple[int, ...] = ()
    #: ONNX Runtime intra-op threads; None leaves its default (torch's pool is process-wide and
    #: left to the application)
    threads: int | None = None


def _check_batch(faces: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if faces.ndim != 4 or len(faces) != len(audio):
        raise ValueError(f"faces {faces.shape} and audio {audio.shape} must be batches of equal size")
    return faces, audio


class TorchRuntime(FaceRuntime):
    """A torch module under ``torch.inference_mode`` (the module is moved there, not copied).
    On CUDA: fp16 by default, inputs staged in pinned host memory and copied asynchronously, and
    optionally one CUDA graph per batch size in ``cuda_graph_batches`` (replaying a graph skips
    per-kernel launch overhead, which dominates at small batches)."""

    def __init__(
        self,
        module: nn.Module,
        device: Device = "cpu",
        half: bool | None = None,
        cuda_graph_batches: Sequence[int] = (),
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise NotConfiguredError("device 'cuda' was asked for but torch sees no CUDA GPU")
        self.half = (device == "cuda") if half is None else half
        if self.half and device == "cpu":
            raise ValueError("half precision is for CUDA; on CPU fp16 convolutions are slower than fp32")
        if cuda_graph_batches and device != "cuda":
            raise ValueError("CUDA graphs need device 'cuda'")
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.half else torch.float32
        self._module: nn.Module | None = module.eval().to(self.device, self.dtype)
        self._graph_batches = frozenset(cuda_graph_batches)
        self._graphs: dict[tuple[tuple[int, ...], tuple[int, ...]], _Graph] = {}
        self._pinned: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        self._lock = threading.Lock()

    @property
    def module(self) -> nn.Module:
        if self._module is None:
            raise RuntimeError("runtime is closed")
        return self._module

    def run(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        faces, audio = _check_batch(faces, audio)
        with self._lock, torch.inference_mode():
            if self.device.type == "cpu":
                out = self.module(torch.from_numpy(faces), torch.from_numpy(audio))
                return out.numpy()
            if len(faces) in self._graph_batches:
                return self._run_graph(faces, audio)
            out = self.module(self._to_device("faces", faces), self._to_device("audio", audio))
            return self._to_host(out)

    def _to_device(self, slot: str, array: np.ndarray) -> torch.Tensor:
        # numpy -> pinned staging buffer -> async copy: pinned memory lets the copy run as DMA
        # without a pageable bounce. Buffers are per input and shape, reused across calls: each
        # run ends with a stream sync, so no copy from a buffer is pending when it is refilled.
        key = (slot, array.shape)
        staging = self._pinned.get(key)
        if staging is None:
            staging = torch.empty(array.shape, dtype=torch.float32, pin_memory=True)
            self._pinned[key] = staging
        staging.copy_(torch.from_numpy(array))
        return staging.to(self.device, non_blocking=True).to(self.dtype)

    def _to_host(self, out: torch.Tensor) -> np.ndarray:
        host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(out.float(), non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy().copy()  # the caller keeps it; pinned memory goes back to the cache

    def _run_graph(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        key = (faces.shape, audio.shape)
        graph = self._graphs.get(key)
        if graph is None:
            graph = _Graph(self.module, faces.shape, audio.shape, self.device, self.dtype)
            self._graphs[key] = graph
        graph.faces.copy_(self._to_device("faces", faces), non_blocking=True)
        graph.audio.copy_(self._to_device("audio", audio), non_blocking=True)
        graph.graph.replay()
        return self._to_host(graph.out)

    def close(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._pinned.clear()
            self._module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _Graph:
    """A CUDA graph of one forward pass over static input/output buffers."""

    def __init__(
        self,
        module: nn.Module,
        face_shape: tuple[int, ...],
        audio_shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.faces = torch.zeros(face_shape, device=device, dtype=dtype)
        self.audio = torch.zeros(audio_shape, device=device, dtype=dtype)
        # warm-up on a side stream (cuDNN picks its algorithms) before capture, as torch requires
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                module(self.faces, self.audio)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out: torch.Tensor = module(self.faces, self.audio).float()


class OnnxRuntime(FaceRuntime):
    """An ONNX model in ONNX Runtime. Inputs ``face`` and ``audio``, output ``out`` (as
    ``livedh.lipsync.export`` writes them)."""

    def __init__(
        self,
        path: Path | str,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime") from exc
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(
                f"ONNX model {path} not found: export one with `livedh model export --out {path}`"
            )
        available = ort.get_available_providers()
        if providers is None:
            wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            wanted = list(providers)
            absent = [p for p in wanted if p not in available]
            if "CUDAExecutionProvider" in absent:
                raise MissingDependencyError("onnxruntime-gpu (CUDAExecutionProvider)", "gpu")
            if absent:
                raise NotConfiguredError(
                    f"ONNX Runtime providers {absent} are not available (available: {available})"
                )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelFileError(f"{path} is not a loadable ONNX model: {exc}") from exc
        names = [i.name for i in self._session.get_inputs()]
        if names != ["face", "audio"]:
            raise ModelFileError(f"{path} has inputs {names}, expected ['face', 'audio']")
        self.providers: list[str] = list(self._session.get_providers())
        self.face_shape: list[Any] = list(self._session.get_inputs()[0].shape)
        self.audio_shape: list[Any] = list(self._session.get_inputs()[1].shape)

    def run(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("runtime is closed")
        faces, audio = _check_batch(faces, audio)
        (out,) = self._session.run(None, {"face": faces, "audio": audio})
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None


def make_runtime(
    config: RuntimeConfig,
    *,
    module: nn.Module | None = None,
    onnx_path: Path | str | None = None,
) -> FaceRuntime:
    """The runtime ``config`` names: ``torch`` runs ``module``, ``onnx`` loads ``onnx_path``."""
    if config.kind == "torch":
        if module is None:
            raise ValueError("the torch runtime needs a module")
        return TorchRuntime(
            module,
            device=config.device,
            half=config.half,
            cuda_graph_batches=config.cuda_graph_batches,
        )
    if config.kind == "onnx":
        if onnx_path is None:
            raise ValueError("the onnx runtime needs an onnx_path")
        if config.half:
            raise ValueError("half applies to the torch runtime; export an fp16 ONNX model instead")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.device == "cuda" else [
            "CPUExecutionProvider"
        ]
        return OnnxRuntime(onnx_path, providers=providers, threads=config.threads)
    raise ValueError(f"unknown runtime kind {config.kind!r}; choose 'torch' or 'onnx'")
