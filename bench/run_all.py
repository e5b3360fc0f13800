"""`make bench`: every benchmark, one after another; each prints its own figures."""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = [
    "bench.bench_render",
    "bench.bench_encode",
    "bench.bench_e2e",
    "bench.bench_avatar_build",
    "bench.bench_motion",
    "bench.bench_flood",
    "bench.bench_flood_server",
]
OPTIONAL = [
    "bench.bench_engine",
    "bench.bench_conversation",
    "bench.bench_models",
    "bench.bench_asr",
    "bench.bench_kb",
    "bench.bench_train",
]


def main() -> int:
    failed = []
    for name in BENCHES + OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in OPTIONAL and exc.name == name:
                continue
            raise
        print(f"\n==================== {name} ====================", flush=True)
        start = time.monotonic()
        sys.argv = [name]
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"FAILED: {exc!r}")
        print(f"({time.monotonic() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
