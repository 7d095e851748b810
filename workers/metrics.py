"""``watchkeeper metrics``: the status figures in Prometheus text format.

A custom collector reads Redis on every scrape (through the same section functions as
``watchkeeper status``), so nothing is kept in per-process registries that a recycled pool
child would lose, and any machine that reaches Redis can serve the metrics.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.runtime import Runtime
from workers.status import collect_status

MB = 1024 * 1024


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Families:
    """Collects samples into metric families created on first use."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, name: str, help: str, value: Any, labels: Mapping[str, str] | None = None,
            counter: bool = False) -> None:
        number = _num(value)
        if number is None:
            return
        labels = dict(labels or {})
        family = self.families.get(name)
        if family is None:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(name, help, labels=list(labels))
            self.families[name] = family
        family.add_metric(list(labels.values()), number)  # type: ignore[attr-defined]


def _redis(f: Families, section: Mapping[str, Any]) -> None:
    f.add("watchkeeper_redis_used_memory_bytes", "Redis used_memory.", section.get("used_memory"))
    f.add("watchkeeper_redis_keys", "Redis keys in the database.", section.get("keys_total"))
    for kind, count in section.get("keys_by_kind", {}).items():
        f.add("watchkeeper_redis_keys_by_kind", "watchkeeper keys by kind.", count,
              {"kind": kind})
    for name, stream in section.get("streams", {}).items():
        f.add("watchkeeper_stream_entries", "Entries in an output stream.", stream.get("size"),
              {"stream": name})
        f.add("watchkeeper_stream_cap_entries", "Cap of an output stream.", stream.get("cap"),
              {"stream": name})


def _sources(f: Families, section: Mapping[str, Any]) -> None:
    for name, src in section.items():
        if not isinstance(src, dict):
            continue
        labels = {"source": name, "kind": str(src.get("kind", ""))}
        state = src.get("state", {})
        f.add("watchkeeper_source_consecutive_errors", "Consecutive failed polls.",
              state.get("errors", 0), labels)
        f.add("watchkeeper_source_last_success_timestamp_seconds", "Last successful poll.",
              state.get("last_ok"), labels)
        f.add("watchkeeper_source_next_check_timestamp_seconds", "Next poll due.",
              state.get("next_check"), labels)
        f.add("watchkeeper_source_backoff_seconds", "Current error backoff.",
              state.get("backoff_s", 0), labels)
        f.add("watchkeeper_source_last_new_items", "New items in the last poll.",
              state.get("last_new"), labels)
        seen = src.get("seen", {})
        f.add("watchkeeper_seen_items", "Seen-set size.", seen.get("size"), labels)
        f.add("watchkeeper_seen_cap_items", "Seen-set cap.", seen.get("cap"), labels)


def _locations(f: Families, section: Mapping[str, Any]) -> None:
    buffer = section.get("buffer", {})
    f.add("watchkeeper_location_buffer_items", "Alerts awaiting a location.", buffer.get("size"))
    f.add("watchkeeper_location_buffer_cap_items", "Location buffer cap.", buffer.get("max"))
    f.add("watchkeeper_location_buffer_max_age_seconds", "Oldest buffered alert's age.",
          buffer.get("max_age_s"))
    f.add("watchkeeper_location_leases", "Batches claimed and not yet done.",
          section.get("leases_outstanding"))
    for outcome, count in section.get("batches", {}).items():
        f.add("watchkeeper_location_batches_total", "Location batches by outcome.", count,
              {"outcome": outcome}, counter=True)
    for method, count in section.get("located_by_method", {}).items():
        f.add("watchkeeper_alerts_located_total", "Alerts located, by method.", count,
              {"method": method}, counter=True)
    for reason, count in section.get("fallback_by_reason", {}).items():
        f.add("watchkeeper_location_fallbacks_total", "Alerts given the fallback location.",
              count, {"reason": reason}, counter=True)


def _tcp(f: Families, section: Mapping[str, Any]) -> None:
    if not section.get("running"):
        return
    f.add("watchkeeper_tcp_connections_open", "Open TCP connections.", section.get("open"))
    for name in ("accepted", "closed", "refused", "bytes", "lines", "idle_timeouts",
                 "write_errors"):
        f.add(f"watchkeeper_tcp_{name}_total", f"TCP listener: {name.replace('_', ' ')}.",
              section.get(name), counter=True)
    for reason, count in section.get("discarded", {}).items():
        f.add("watchkeeper_tcp_discarded_lines_total", "TCP lines discarded, by reason.", count,
              {"reason": reason}, counter=True)
    f.add("watchkeeper_tcp_queue_lines", "Lines queued for Redis.",
          section.get("queue", {}).get("lines"))


def _workers(f: Families, section: Mapping[str, Any]) -> None:
    for node, info in section.get("nodes", {}).items():
        parent = info.get("parent", {})
        f.add("watchkeeper_worker_rss_bytes", "Resident memory of a worker process.",
              (_num(parent.get("rss_mb")) or 0) * MB, {"node": node, "role": "parent",
                                                       "pid": str(parent.get("pid"))})
        for child in info.get("children", []):
            labels = {"node": node, "role": "child", "pid": str(child.get("pid"))}
            f.add("watchkeeper_worker_rss_bytes", "Resident memory of a worker process.",
                  (_num(child.get("rss_mb")) or 0) * MB, labels)
            f.add("watchkeeper_worker_uss_bytes", "Unique memory of a pool child.",
                  (_num(child.get("uss_mb")) or 0) * MB, labels)
            f.add("watchkeeper_worker_child_tasks", "Tasks run by a pool child.",
                  child.get("tasks"), labels)
        for reason, count in info.get("recycles", {}).items():
            f.add("watchkeeper_worker_recycles_total", "Pool children replaced, by reason.",
                  count, {"node": node, "reason": reason}, counter=True)


def _task_memory(f: Families, section: Mapping[str, Any]) -> None:
    for task, stats in section.get("tasks", {}).items():
        labels = {"task": task}
        f.add("watchkeeper_task_runs_total", "Task runs measured.", stats.get("count"), labels,
              counter=True)
        f.add("watchkeeper_task_memory_delta_mean_bytes", "Mean RSS change per run.",
              (_num(stats.get("mean_delta_mb")) or 0) * MB, labels)
        f.add("watchkeeper_task_memory_delta_max_bytes", "Largest RSS change of one run.",
              (_num(stats.get("max_delta_mb")) or 0) * MB, labels)


def _dead_letters(f: Families, section: Mapping[str, Any]) -> None:
    f.add("watchkeeper_dead_letters", "Tasks quarantined after killing workers.",
          section.get("size"))


TRANSLATORS = {"redis": _redis, "sources": _sources, "locations": _locations, "tcp": _tcp,
               "workers": _workers, "task_memory": _task_memory,
               "dead_letters": _dead_letters}


class StatusCollector(Collector):
    """Reads every status section from Redis at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        families = Families()
        status = collect_status(self.rt)
        for name, translate in TRANSLATORS.items():
            section = status.get(name)
            ok = isinstance(section, dict) and "error" not in section
            families.add("watchkeeper_status_section_up", "1 when a status section was read.",
                         1 if ok else 0, {"section": name})
            if ok:
                translate(families, section)  # type: ignore[arg-type]
        families.add("watchkeeper_scrape_duration_seconds", "Time to read the status.",
                     time.monotonic() - started)
        yield from families.families.values()


def serve(rt: Runtime, port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics until SIGINT or SIGTERM."""
    REGISTRY.register(StatusCollector(rt))
    server, thread = start_http_server(port, addr=host)
    print(f"[metrics] serving http://{host}:{port}/metrics", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0
