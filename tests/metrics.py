"""Reading a Prometheus text page in tests: every sample by name and labels."""

from __future__ import annotations

from collections.abc import Mapping

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


def moved(
    before: Samples, after: Samples, name: str, labels: Mapping[str, str] | None = None
) -> float:
    labels = labels or {}
    return value(after, name, **labels) - value(before, name, **labels)
