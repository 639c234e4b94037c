"""The directory through which `zenzefi worker`'s processes add up their metrics.

Kept apart from `zenzefi_worker.metrics` on purpose: prometheus_client decides between
in-process and multiprocess counters when it is first imported, so this must run, and this
module must be importable, before anything imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

logger = logging.getLogger("zenzefi.worker")

#: prometheus_client's switch to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_counters() -> Iterator[str]:
    """A fresh directory for the counters of the worker processes about to start, removed once
    they have stopped (stale files would add a previous run's counts). A directory the operator
    set already is used as it is."""
    if "prometheus_client" in sys.modules:
        logger.warning(
            "prometheus_client was imported before the worker processes' shared counters were "
            "set up; their metrics endpoint will not see their counts"
        )
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        yield given
        return
    directory = tempfile.mkdtemp(prefix="zenzefi-worker-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
