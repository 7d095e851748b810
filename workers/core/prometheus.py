"""Prometheus metrics from status sections, declared as data and translated by one function.

Each package declares the metrics of its status sections in its ``metrics.toml``: one
``[[<section>]]`` table per metric, naming the metric, its help text and where its samples are
in the section's JSON — ``rows`` a dotted path to the rows (``{label}`` iterates a mapping,
binding its keys to that label; ``name[]`` iterates a list), ``value`` a dotted path within a
row (empty: the row itself), ``labels`` more labels from the row (``"=text"``: a constant),
``scale`` a factor (MB → bytes), ``default`` for a missing value, ``when`` a path that must be
truthy, and ``counter``. ``watchkeeper metrics`` reads the same sections as ``status``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

MB = 1024 * 1024


def number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Families:
    """Collects samples into metric families created on first use; non-numbers are skipped."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(
        self,
        name: str,
        help: str,
        value: Any,
        labels: Mapping[str, str] | None = None,
        counter: bool = False,
    ) -> None:
        sample = number(value)
        if sample is None:
            return
        labels = dict(labels or {})
        family = self.families.get(name)
        if family is None:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(name, help, labels=list(labels))
            self.families[name] = family
        family.add_metric(list(labels.values()), sample)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    value: str = ""
    rows: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0
    default: float | None = None
    when: str = ""
    counter: bool = False


@cache
def declared_metrics(package: str, section: str) -> tuple[MetricSpec, ...]:
    """The ``[[section]]`` metrics of ``<package>/metrics.toml``."""
    text = resources.files(package).joinpath("metrics.toml").read_text(encoding="utf-8")
    return tuple(MetricSpec(**row) for row in tomllib.loads(text).get(section, []))


def lookup(node: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def rows(node: Any, path: str) -> Iterator[tuple[dict[str, str], Any]]:
    """Every row a ``rows`` path reaches, with the labels its ``{label}`` parts bound."""
    parts = [p for p in path.split(".") if p]

    def walk(node: Any, i: int, labels: dict[str, str]) -> Iterator[tuple[dict[str, str], Any]]:
        if i == len(parts):
            yield labels, node
            return
        part = parts[i]
        if part.startswith("{") and part.endswith("}") and isinstance(node, Mapping):
            for key, child in node.items():
                yield from walk(child, i + 1, {**labels, part[1:-1]: str(key)})
        elif part.endswith("[]"):
            items = lookup(node, part[:-2])
            for child in items if isinstance(items, list) else ():
                yield from walk(child, i + 1, labels)
        elif isinstance(node, Mapping) and part in node:
            yield from walk(node[part], i + 1, labels)

    yield from walk(node, 0, {})


def translate(families: Families, section: Mapping[str, Any], specs: Sequence[MetricSpec]) -> None:
    for spec in specs:
        if spec.when and not lookup(section, spec.when):
            continue
        for labels, row in rows(section, spec.rows):
            value = number(lookup(row, spec.value))
            if value is None:
                value = spec.default
            if value is None:
                continue
            extra = {
                k: v[1:] if v.startswith("=") else str(lookup(row, v))
                for k, v in spec.labels.items()
            }
            families.add(
                spec.name, spec.help, value * spec.scale, {**labels, **extra}, counter=spec.counter
            )
