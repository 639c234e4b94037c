"""Time every garbage collection of the Python processes of a run, to find pauses under load.

    PYTHONPATH=bench/gcpauses ZENZEFI_GC_LOG_DIR=/tmp/gc zenzefi serve --workers 2
    python bench/gcpauses/sitecustomize.py /tmp/gc      # the summary, per process

Python imports `sitecustomize` from its path when it starts, so every process started with
this folder on `PYTHONPATH` (the API processes of `zenzefi serve --workers N` inherit it)
appends a line per collection to `<ZENZEFI_GC_LOG_DIR>/<pid>.txt`: the wall-clock time, the
generation, the milliseconds it took and the objects it freed. Without `ZENZEFI_GC_LOG_DIR`
it does nothing. This is how the full collections behind the proxy's p99 at 64 connections
were found (docs/performance.md, "Two processes and the 4-second p99").
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

LOG_DIR = os.environ.get("ZENZEFI_GC_LOG_DIR")


def _install(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.txt"
    started = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - started[0]) * 1000
        with path.open("a") as log:
            log.write(f"{time.time():.3f} {info['generation']} {took:.3f} {info['collected']}\n")

    gc.callbacks.append(timed)


def summary(folder: Path) -> None:
    """Per process and generation: collections, mean, max and total milliseconds."""
    for log in sorted(folder.glob("*.txt")):
        rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
        print(f"process {log.stem}:")
        for generation in ("0", "1", "2"):
            took = [float(row[2]) for row in rows if row[1] == generation]
            if took:
                print(
                    f"  generation {generation}: {len(took):>6} collections, mean "
                    f"{sum(took) / len(took):7.2f} ms, max {max(took):8.1f} ms, total "
                    f"{sum(took):8.0f} ms, {sum(t > 5 for t in took)} over 5 ms"
                )


if __name__ == "__main__":
    summary(Path(sys.argv[1]))
elif LOG_DIR:
    _install(Path(LOG_DIR))
