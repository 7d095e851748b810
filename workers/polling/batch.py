"""Several due sources polled by one task, one after another (beat's batches).

A poll of a small feed costs a few milliseconds; Celery's fixed cost per task — beat's send,
the worker's reservation, hand-over to a pool process and ack, four broker round trips — is of
the same order. When many sources fall due together, beat sends them as batches
(``workers.polling.dispatch.group``) and this task polls each exactly as its own task would:
the same claim (lock, due time, pause, host slot; the source's queued marker cleared with its
own task id), the same write. One source's failure is its own error, as ever.

A batch never holds a source up for long: beat keeps sources whose last poll failed, was slow
or never finished out of batches, and a batch that has run ``WATCHKEEPER_POLL_BATCH_BUDGET``
seconds sends the polls it has not started on as tasks of their own (with their own task ids,
so their queued markers still name them) instead of running them late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import shared_task

from workers.core.runtime import Runtime, get_runtime
from workers.polling.dispatch import BATCH_TASK, clear_queued, queued_key
from workers.polling.kinds import KINDS, SourceKind
from workers.polling.poll import poll_by_name

log = logging.getLogger(__name__)

SendAlone = Callable[[SourceKind, str, str], None]
"""``send_alone(kind, source name, task id)``: publish one source's own poll task."""


def poll_batch(
    rt: Runtime, polls: Sequence[Sequence[str]], send_alone: SendAlone
) -> list[dict[str, Any]]:
    """Poll each ``[kind, source name, task id]`` in turn; past the budget, send the rest on."""
    started = time.monotonic()
    outcomes: list[dict[str, Any]] = []
    resolved = rt.sources.get_many(name for _, name, _ in polls)  # one round trip for all
    for index, (kind_name, name, task_id) in enumerate(polls):
        if index and time.monotonic() - started > rt.settings.poll_batch_budget:
            _send_rest(rt, polls[index:], send_alone, index)
            break
        kind = KINDS.get(kind_name)
        if kind is None:  # its stage is no longer installed: nothing to poll it with
            log.warning("[poll] %r: unknown source kind %r; skipped", name, kind_name)
            clear_queued(rt.redis, queued_key(rt.settings, kind_name, name), task_id)
            outcomes.append({"source": name, "status": "skipped", "reason": "unknown kind"})
            continue
        try:
            outcomes.append(poll_by_name(rt, kind, name, task_id=task_id, resolved=resolved))
        except redis.ConnectionError:  # Redis is gone: the rest would fail too; markers expire
            raise
        except Exception as exc:  # one source's fault never stops the others in its batch
            log.exception("[poll] %r: poll failed", name)
            outcomes.append({"source": name, "status": "error", "error": type(exc).__name__})
    return outcomes


def _send_rest(
    rt: Runtime, rest: Sequence[Sequence[str]], send_alone: SendAlone, done: int
) -> None:
    log.info(
        "[poll] batch past its %gs budget after %d polls: %d sent on as tasks of their own",
        rt.settings.poll_batch_budget,
        done,
        len(rest),
    )
    for kind_name, name, task_id in rest:
        kind = KINDS.get(kind_name)
        if kind is None:
            continue
        try:
            send_alone(kind, name, task_id)
        except Exception as exc:  # its queued marker expires; beat dispatches it again
            log.warning("[poll] %r: could not send its poll on: %s", name, exc)


@shared_task(name=BATCH_TASK, bind=True)
def poll_batch_task(self: Any, polls: list[list[str]]) -> list[dict[str, Any]]:
    """Scheduled polls of several sources (beat's batch), each as its own task would poll it."""
    expires = self.request.expires

    def send_alone(kind: SourceKind, name: str, task_id: str) -> None:
        self.app.send_task(
            kind.task, args=[name], task_id=task_id, expires=expires, ignore_result=True
        )

    return poll_batch(get_runtime(), polls, send_alone)
