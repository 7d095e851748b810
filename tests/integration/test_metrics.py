"""`watchkeeper metrics` serves the status figures as Prometheus text, read from Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import wait_for
from workers.store.seen import SeenSet
from workers.store.streams import CappedStream


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_parses_as_prometheus_text_with_redis_figures(
    runtime, redis_url, tmp_path
):
    # Given a configured source with a seen-set and entries in the alerts stream
    rt = runtime.use_config('[[feeds]]\nname = "world"\nurl = "http://127.0.0.1:9/rss"\n')
    SeenSet(rt.redis, "wk:seen:world", 10000).add_new([f"k{i}" for i in range(7)])
    CappedStream(rt.redis, "wk:stream:alerts", 10000, "wk:stream:alerts:seq").add_many(
        {"title": str(i)} for i in range(3)
    )
    rt.redis.hset("wk:src:world", mapping={"errors": 2, "last_ok": 1700000000})
    # When `watchkeeper metrics` serves them
    port = _free_port()
    env = dict(os.environ, REDIS_URL=redis_url, WATCHKEEPER_CONFIG=str(rt.config_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "metrics", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:

        def scrape() -> str | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except requests.RequestException:
                return None

        text = wait_for(scrape, timeout=60, interval=0.2, message="metrics endpoint")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    # Then the text parses and carries the figures from Redis, labelled
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    source = (("kind", "feed"), ("source", "world"))
    assert samples[("watchkeeper_seen_items", source)] == 7
    assert samples[("watchkeeper_seen_cap_items", source)] == 10000
    assert samples[("watchkeeper_source_consecutive_errors", source)] == 2
    assert samples[("watchkeeper_stream_entries", (("stream", "alerts"),))] == 3
    assert samples[("watchkeeper_redis_used_memory_bytes", ())] > 0
    assert samples[("watchkeeper_status_section_up", (("section", "redis"),))] == 1


def test_metrics_binds_the_host_asked_for(runtime, redis_url):
    import psutil

    port = _free_port()
    env = dict(os.environ, REDIS_URL=redis_url, WATCHKEEPER_CONFIG=str(runtime.config_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "metrics", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:

        def bound() -> list[str]:
            return [
                c.laddr.ip
                for c in psutil.Process(proc.pid).net_connections("inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]

        assert wait_for(bound, timeout=60, message="metrics listening") == ["0.0.0.0"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_a_busy_metrics_port_is_one_line(runtime, redis_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, REDIS_URL=redis_url, WATCHKEEPER_CONFIG=str(runtime.config_path))
        proc = subprocess.run(
            [sys.executable, "-m", "workers.cli", "metrics", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"watchkeeper: metrics: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
