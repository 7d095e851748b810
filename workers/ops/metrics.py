"""``watchkeeper metrics``: the status figures in Prometheus text format.

A custom collector reads Redis on every scrape (through the same sections as ``watchkeeper
status``, each translated by its own declaration), so nothing is kept in per-process registries
that a recycled pool child would lose, and any machine that reaches Redis can serve the metrics.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, Metric
from prometheus_client.registry import Collector

from workers.core.prometheus import Families, translate
from workers.core.runtime import Runtime
from workers.ops.status import collect_status, sections


class MetricsUnavailable(RuntimeError):
    """The metrics endpoint cannot listen (one line)."""


class StatusCollector(Collector):
    """Reads every status section from Redis at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        families = Families()
        status = collect_status(self.rt)
        for declared in sections():
            section = status.get(declared.name)
            ok = isinstance(section, dict) and "error" not in section
            families.add(
                "watchkeeper_status_section_up",
                "1 when a status section was read.",
                1 if ok else 0,
                {"section": declared.name},
            )
            if ok:
                translate(families, section, declared.metrics)  # type: ignore[arg-type]
        families.add(
            "watchkeeper_scrape_duration_seconds",
            "Time to read the status.",
            time.monotonic() - started,
        )
        yield from families.families.values()


def serve(rt: Runtime, port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics until SIGINT or SIGTERM (handled from before the port opens, so a stop
    that comes as soon as it is listening is still a clean one)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:  # port in use, address not on this host, no permission
        raise MetricsUnavailable(
            f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    REGISTRY.register(StatusCollector(rt))
    print(f"[metrics] serving http://{host}:{port}/metrics", flush=True)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0
