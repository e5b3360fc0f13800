"""Export face networks to ONNX, check the export against torch, and the ``livedh model export``
command.

Exports take inputs ``face`` (B, 6, S, S) and ``audio`` (B, *audio_shape), float32, and give
``out`` (B, 3, S, S). Parity tolerance: on CPU in fp32 the ONNX Runtime output matches torch to
``PARITY_TOLERANCE`` (1e-4) max abs difference on the [0, 1] output scale; a uint8 pixel step is
~4e-3, so a diff under the tolerance never changes a rendered pixel by more than one level.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from livedh.errors import LiveDHError, MissingDependencyError

#: max abs difference (output in [0, 1]) between torch fp32 and ONNX Runtime fp32 on CPU
PARITY_TOLERANCE = 1e-4
#: operator set of exported models: the lowest torch's exporter implements natively (17, the
#: floor here, works through a version conversion)
DEFAULT_OPSET = 18
ARCHS = ("wav2lip", "wav2lip256", "ultralight")
Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "torchscript")


def export_onnx(
    module: nn.Module,
    path: Path | str,
    size: int,
    audio_shape: Sequence[int],
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    batch: int = 1,
    exporter: Exporter = "dynamo",
) -> Path:
    """Write ``module`` (forward(face, audio)) as a single-file ONNX model at ``path``.
    ``dynamic_batch``: any batch size at run time; otherwise the batch is fixed at ``batch``.
    ``exporter``: ``dynamo`` (torch.export based, torch's maintained path) or ``torchscript``
    (torch's deprecated tracer: an equivalent graph for these plain CNNs, ~10x faster to export)."""
    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # trace in fp32 on CPU on a copy: the caller's module may be fp16 on a GPU
    reference = next(module.parameters(), None)
    cpu_module = module
    if reference is not None and (reference.device.type != "cpu" or reference.dtype != torch.float32):
        cpu_module = copy.deepcopy(module).to("cpu", torch.float32)
    cpu_module.eval()
    example_batch = 2 if dynamic_batch else batch  # 2: a batch of 1 would be specialised away
    face = torch.rand(example_batch, 6, size, size)
    audio = torch.randn(example_batch, *audio_shape)
    if exporter == "torchscript":
        _export_torchscript(cpu_module, (face, audio), path, dynamic_batch, opset)
        return path
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter's backend; fail with an install hint
    except ImportError as exc:
        raise MissingDependencyError("onnxscript", "onnx") from exc
    dynamic_shapes: dict[str, Any] | None = None
    if dynamic_batch:
        dim = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = {"face": {0: dim}, "audio": {0: dim}}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the exporter notes that both inputs share the one batch dimension: that is the intent
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
        program = torch.onnx.export(
            cpu_module,
            (face, audio),
            input_names=["face", "audio"],
            output_names=["out"],
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    # one self-contained file (weights inline; every model here is far below the 2 GB limit)
    program.save(str(path), external_data=False)
    return path


def _export_torchscript(
    module: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, dynamic: bool, opset: int
) -> None:
    axes = {"face": {0: "batch"}, "audio": {0: "batch"}, "out": {0: "batch"}} if dynamic else None
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # chosen knowingly
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=["face", "audio"],
            output_names=["out"],
            opset_version=opset,
            dynamic_axes=axes,
            dynamo=False,
        )


def parity(torch_module: nn.Module, onnx_path: Path | str, batch: int = 2, seed: int = 0) -> float:
    """Max abs difference between ``torch_module`` and the ONNX model at ``onnx_path`` (ONNX
    Runtime on CPU) on one random batch; compare with ``PARITY_TOLERANCE``."""
    from livedh.lipsync.runtime import OnnxRuntime

    runtime = OnnxRuntime(onnx_path, providers=["CPUExecutionProvider"])
    try:
        face_dims = [int(d) for d in runtime.face_shape[1:]]
        audio_dims = [int(d) for d in runtime.audio_shape[1:]]
        rng = np.random.default_rng(seed)
        faces = rng.random((batch, *face_dims), dtype=np.float32)
        audio = rng.uniform(-4.0, 4.0, (batch, *audio_dims)).astype(np.float32)
        reference = next(torch_module.parameters())
        with torch.inference_mode():
            expected = torch_module(
                torch.from_numpy(faces).to(reference.device, reference.dtype),
                torch.from_numpy(audio).to(reference.device, reference.dtype),
            )
        got = runtime.run(faces, audio)
    finally:
        runtime.close()
    return float(np.max(np.abs(expected.float().cpu().numpy() - got)))


def build_for_export(
    arch: str, checkpoint: Path | None, audio_features: str = "mel"
) -> tuple[nn.Module, int, tuple[int, ...]]:
    """The module to export, its crop size and per-frame audio shape. ``checkpoint`` None: random
    weights with calibrated BatchNorm statistics (for tests and benchmarks: the output responds
    to the audio)."""
    from livedh.lipsync import checkpoints
    from livedh.lipsync.nets import calibrate_batchnorm, ultralight, wav2lip

    if arch in ("wav2lip", "wav2lip256"):
        variant: wav2lip.Wav2LipVariant = "96" if arch == "wav2lip" else "256"
        if checkpoint is None:
            w2l = wav2lip.build_wav2lip(variant)
            calibrate_batchnorm(w2l, w2l.size, wav2lip.MEL_SHAPE)
        else:
            w2l = checkpoints.load_wav2lip(checkpoint, variant=variant)
        return w2l, w2l.size, wav2lip.MEL_SHAPE
    if arch == "ultralight":
        if checkpoint is None:
            if audio_features not in ultralight.AUDIO_FEATURES:
                raise ValueError(f"unknown audio features {audio_features!r}")
            ul = ultralight.build_ultralight(audio_features)
            calibrate_batchnorm(ul, ul.size, ul.config.audio_shape)
        else:
            ul = checkpoints.load_ultralight(checkpoint)
        return ul, ul.size, ul.config.audio_shape
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHS}")


def add_export_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` to ``subparsers`` (the lead wires it under ``livedh model``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="export a lip-sync network to ONNX (and check it against torch)"
    )
    parser.add_argument("--arch", required=True, choices=ARCHS)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="weights file (e.g. models/wav2lip.pth)")
    source.add_argument("--random", action="store_true", help="random weights, for testing")
    parser.add_argument("--audio-features", default="mel", choices=["mel", "hubert", "wenet"],
                        help="Ultralight front-end with --random (a checkpoint records its own)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path")
    parser.add_argument("--batch", default="dynamic",
                        help="'dynamic' (any batch size) or a fixed batch size")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                        help="torch exporter: dynamo (maintained) or torchscript (faster, deprecated)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the ONNX Runtime parity check")
    parser.set_defaults(func=export_command)
    return parser


def export_command(args: argparse.Namespace) -> int:
    if args.batch == "dynamic":
        dynamic, batch = True, 1
    else:
        try:
            dynamic, batch = False, int(args.batch)
        except ValueError:
            print(f"error: --batch must be 'dynamic' or an integer, got {args.batch!r}", file=sys.stderr)
            return 2
        if batch < 1:
            print("error: --batch must be at least 1", file=sys.stderr)
            return 2
    try:
        module, size, audio_shape = build_for_export(args.arch, args.checkpoint, args.audio_features)
        path = export_onnx(module, args.out, size, audio_shape, dynamic_batch=dynamic,
                           opset=args.opset, batch=batch, exporter=args.exporter)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): face (B, 6, {size}, {size}), "
              f"audio (B, {', '.join(map(str, audio_shape))})")
        if not args.no_check:
            diff = parity(module, path, batch=2 if dynamic else batch)
            verdict = "ok" if diff <= PARITY_TOLERANCE else "FAILED"
            print(f"parity with torch: max abs diff {diff:.2e} (tolerance {PARITY_TOLERANCE:.0e}) {verdict}")
            if diff > PARITY_TOLERANCE:
                return 1
    except LiveDHError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0
