"""Reading /metrics as Prometheus does: prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition; parsing fails on bad text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(text: str) -> dict[str, str]:
    """{family name: type} of an exposition."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; 0 when the sample is not there (a labelled counter not touched yet)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)
