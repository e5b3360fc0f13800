"""Neural lip-sync network speed: frames/s of the bare network (random weights) by batch size and
runtime — torch fp32 CPU and ONNX Runtime CPU, plus torch fp16 CUDA (eager and CUDA graphs) and
ONNX Runtime CUDA when a GPU is there — and the per-frame cost of the mel front-end. Prints a
table; asserts nothing.

    .venv/bin/python -m bench.bench_models [--archs wav2lip ultralight wav2lip256]
        [--batches 1 4 16 64] [--min-time 0.5] [--threads N] [--exporter torchscript|dynamo]

CPU defaults keep the run to a couple of minutes on 2 cores: each case runs one warm-up call,
then repeats until ``--min-time`` seconds have passed (at least once); Wav2Lip-256 runs batches
of at most 4 on CPU. ONNX models come from the torchscript exporter by default: it exports ~10x
faster than dynamo and ONNX Runtime runs both exports at the same speed (same ops after its own
graph optimisation).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from livedh.lipsync.export import EXPORTERS, Exporter, build_for_export, export_onnx
from livedh.lipsync.mel import mel_windows
from livedh.lipsync.runtime import FaceRuntime, OnnxRuntime, TorchRuntime

CPU_MAX_BATCH = {"wav2lip256": 4}


def seconds_per_call(run: Callable[[], object], min_time: float) -> float:
    run()  # warm-up: allocator, oneDNN/cuDNN algorithm choice, CUDA graph capture
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def row(arch: str, runtime: str, batch: int, seconds: float) -> None:
    print(f"{arch:<11} {runtime:<22} {batch:>5} {seconds * 1000:>11.1f} {batch / seconds:>9.1f}", flush=True)


def bench_runtime(
    arch: str, label: str, runtime: FaceRuntime, size: int, audio_shape: tuple[int, ...],
    batches: list[int], min_time: float,
) -> None:
    rng = np.random.default_rng(0)
    for b in batches:
        faces = rng.random((b, 6, size, size), dtype=np.float32)
        audio = rng.uniform(-4, 4, (b, *audio_shape)).astype(np.float32)
        try:
            row(arch, label, b, seconds_per_call(partial(runtime.run, faces, audio), min_time))
        except (RuntimeError, MemoryError) as exc:  # e.g. out of GPU memory at a large batch
            print(f"{arch:<11} {label:<22} {b:>5}  failed: {str(exc).splitlines()[0][:60]}")
            break
    runtime.close()


def bench_arch(
    arch: str, batches: list[int], min_time: float, cuda: bool, tmp: Path, threads: int | None,
    exporter: Exporter,
) -> None:
    module, size, audio_shape = build_for_export(arch, None)
    cpu_batches = [b for b in batches if b <= CPU_MAX_BATCH.get(arch, max(batches))]
    bench_runtime(arch, "torch fp32 cpu", TorchRuntime(copy.deepcopy(module)), size, audio_shape,
                  cpu_batches, min_time)
    onnx_path = tmp / f"{arch}.onnx"
    export_onnx(module, onnx_path, size, audio_shape, exporter=exporter)
    ort_cpu = OnnxRuntime(onnx_path, providers=["CPUExecutionProvider"], threads=threads)
    bench_runtime(arch, "onnxruntime cpu", ort_cpu, size, audio_shape, cpu_batches, min_time)
    if not cuda:
        return
    bench_runtime(arch, "torch fp16 cuda", TorchRuntime(copy.deepcopy(module), device="cuda"),
                  size, audio_shape, batches, min_time)
    bench_runtime(arch, "torch fp16 cuda graphs",
                  TorchRuntime(copy.deepcopy(module), device="cuda", cuda_graph_batches=batches),
                  size, audio_shape, batches, min_time)
    try:
        ort_cuda = OnnxRuntime(onnx_path, providers=["CUDAExecutionProvider"])
    except Exception as exc:  # onnxruntime-gpu missing, or its CUDA libraries
        print(f"{arch:<11} {'onnxruntime cuda':<22}     -  skipped: {exc}")
        return
    bench_runtime(arch, "onnxruntime cuda fp32", ort_cuda, size, audio_shape, batches, min_time)


def bench_mel(batches: list[int], min_time: float) -> None:
    rng = np.random.default_rng(0)
    for b in batches:
        audio = (0.1 * rng.standard_normal((b, 3800))).astype(np.float32)
        row("mel", "numpy (front-end)", b, seconds_per_call(partial(mel_windows, audio), min_time))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", nargs="+", default=["wav2lip", "ultralight", "wav2lip256"],
                        choices=["wav2lip", "ultralight", "wav2lip256"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per case (after warm-up)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and ONNX Runtime intra-op threads (default: theirs)")
    parser.add_argument("--exporter", default="torchscript", choices=EXPORTERS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes per case: let cuDNN pick
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, CUDA: {torch.cuda.get_device_name() if cuda else 'none'}")
    print(f"{'arch':<11} {'runtime':<22} {'batch':>5} {'ms/batch':>11} {'frames/s':>9}")
    bench_mel(args.batches, min(args.min_time, 0.5))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            start = time.perf_counter()
            bench_arch(arch, args.batches, args.min_time, cuda, Path(tmp), args.threads, args.exporter)
            print(f"  ({arch}: {time.perf_counter() - start:.0f} s including ONNX export)", flush=True)


if __name__ == "__main__":
    main()
