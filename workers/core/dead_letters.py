"""Dead-letter boxes: where each stage keeps what it gave up on, declared once by that stage.

The guard keeps tasks that took their worker down (``wk:dead``); notifications keep messages a
destination gave up on. The dashboard lists, retries and drops them through this registry
without importing a stage. A letter is a dict with at least ``ref`` (unique in its box),
``when`` (UTC text), ``what`` and ``why`` (one line each) and ``retryable``; ``retry`` and
``drop`` take that ref and return how many letters they handled (0: no such letter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from workers.core.registry import Registry

if TYPE_CHECKING:
    from workers.core.runtime import Runtime


class Dispatch(Protocol):
    """Sends a Celery task by name with args, kwargs and message options (``task_id``,
    ``expires``, ``queue``): the assembly's ``app.send_task``."""

    def __call__(
        self, name: str, args: list[Any], kwargs: dict[str, Any], **options: Any
    ) -> Any: ...


@dataclass(frozen=True)
class DeadLetterBox:
    name: str
    label: str
    list: Callable[[Runtime, int], list[dict[str, Any]]]
    retry: Callable[[Runtime, str, Dispatch], int]
    drop: Callable[[Runtime, str], int]
    size: Callable[[Runtime], dict[str, Any]]


BOXES: Registry[DeadLetterBox] = Registry("dead-letter box")


def declare_box(box: DeadLetterBox) -> DeadLetterBox:
    return BOXES.add(box.name, box)
