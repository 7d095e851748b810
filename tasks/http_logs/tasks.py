"""The log-endpoint source kind: entries polled into the ``logs`` stream."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.http_logs.fields import HTTP_LOG_FIELDS
from tasks.http_logs.parse import ACCEPT, parse_log_body
from tasks.http_logs.source import HttpLogSource, read_http_log
from workers.core.runtime import Runtime, get_runtime
from workers.polling.fetch import FetchResult
from workers.polling.kinds import Collected, Item, SourceKind, declare_kind
from workers.polling.poll import poll_by_name
from workers.polling.single_fetch import collect_one
from workers.polling.state import SourceState


def _parse(source: HttpLogSource, result: FetchResult) -> tuple[list[Item], int]:
    return parse_log_body(source, result.body, result.headers, result.url)


def collect(rt: Runtime, source: HttpLogSource, state: SourceState) -> Collected:
    return collect_one(rt, source, state, ACCEPT.get(source.format, "*/*"), _parse)


# fmt: off
HTTP_LOGS = declare_kind(SourceKind(
    name="http_log", section="http_logs", read=read_http_log, stream="logs", collect=collect,
    task="tasks.http_logs.poll_http_log", fields=HTTP_LOG_FIELDS))
# fmt: on


@shared_task(name="tasks.http_logs.poll_http_log")
def poll_http_log(name: str, force: bool = False) -> dict[str, Any]:
    """Scheduled poll of one log endpoint (``force``: "check now")."""
    return poll_by_name(get_runtime(), HTTP_LOGS, name, force)
