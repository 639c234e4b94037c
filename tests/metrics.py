"""Reading a Prometheus text page in tests: every sample by name and labels."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(page: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; a series that is absent counts as 0 (a counter not yet moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def moved(
    before: Samples, after: Samples, name: str, labels: Mapping[str, str] | None = None
) -> float:
    labels = labels or {}
    return value(after, name, **labels) - value(before, name, **labels)


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for something another thread finishes after the response went out (the proxy
    counts a stream once its last byte is sent); no timing is asserted, only the outcome."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the expected change never happened")
        time.sleep(0.01)
