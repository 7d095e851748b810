"""The sections of ``watchkeeper status``, each declared once by the package it reports on.

A section is a function ``collect(rt) -> dict`` reading Redis only (so status works from any
machine that reaches Redis, while workers run or not), with an optional terminal renderer and
the Prometheus metrics declared for it (``workers.core.prometheus``).
``workers.ops.status`` collects them in declaration order; one that fails shows
``{"error": ...}`` and the others still appear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.core.prometheus import MetricSpec
from workers.core.registry import Registry

if TYPE_CHECKING:
    from workers.core.runtime import Runtime


@dataclass(frozen=True)
class StatusSection:
    name: str
    collect: Callable[[Runtime], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[str]] | None = None
    metrics: tuple[MetricSpec, ...] = ()


SECTIONS: Registry[StatusSection] = Registry("status section")


def declare_section(section: StatusSection) -> StatusSection:
    return SECTIONS.add(section.name, section)
