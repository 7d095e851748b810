"""What the fault-injection run observes and proves: stream contents, memory, secrets.

``Collector`` follows the output streams (``alerts``, ``logs``, ``listings``, ``locations``)
from the observer host while the run goes on, so the streams can stay at small caps: it counts
every entry by its key and notices if a trim ever overtook it (then the count is unusable and
the run says so). It reconnects across Redis restarts. ``MemorySampler`` keeps Redis's
``used_memory`` peak. ``secret_findings`` looks for the planted secrets in files, key names and
command output.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

STREAMS = ("alerts", "logs", "listings", "locations")
TCP_LINE = re.compile(r"fault tcp line (\d+) end")


@dataclass
class Seen:
    """Everything the collector found, by the key that identifies an item in its stream."""

    items: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    where: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    alert_key: dict[str, str] = field(default_factory=dict)
    located: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    entries: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    hook: Callable[[str, str], None] = lambda kind, key: None

    def note(self, kind: str, key: str, entry_id: str) -> None:
        self.items[kind][key] += 1
        self.hook(kind, key)
        self.where[kind].setdefault(key, []).append(entry_id)


class Collector:
    """Follows the output streams from the start of the run, counting items by key.

    With Sentinel it reads from a replica (``replica`` gives a client of one), never from the
    primary: an entry on a replica survives a failover (Sentinel promotes the most advanced
    replica, and the run's faults come one at a time), while one read from the primary before
    it reached a replica may vanish with it and be written again — counted twice by a reader
    that saw both. Each read checks, in the same transaction, that the server is a replica
    with its link to the primary up (a demoted primary still resyncing serves its own stale
    data, lost writes included), else it is discarded and another replica chosen."""

    def __init__(
        self,
        url: str,
        stream_keys: dict[str, str],
        on_item: Callable[[str, str], None] = lambda kind, key: None,
        replica: Callable[[], redis.Redis] | None = None,
    ) -> None:
        self.url, self.stream_keys, self.on_item = url, stream_keys, on_item
        self.replica = replica
        self.stale_reads = 0
        self.last = {name: "0-0" for name in stream_keys}
        self.seen = Seen(hook=on_item)
        self.stop_event = threading.Event()
        self.reconnects = 0
        self.times: list[float] = []
        """When each entry read was written (its id's time, seconds): watchkeeper's writes."""
        self.read_count: Counter[str] = Counter()
        self.missed: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="faults-collector", daemon=True)

    def start(self) -> Collector:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        client: redis.Redis | None = None
        while not self.stop_event.is_set():
            try:
                if client is None:
                    client = self._client()
                if not self.read(client):
                    self.stop_event.wait(0.3)
            except (redis.RedisError, OSError):
                self.reconnects += 1
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                client = None
                self.stop_event.wait(0.5)

    def _client(self) -> redis.Redis:
        if self.replica is not None:
            return self.replica()
        from workers.core.connection import connect

        return connect(self.url, socket_timeout=5, socket_connect_timeout=3)

    def read(self, client: redis.Redis) -> int:
        """One pass over every stream; the number of entries read.

        ``XINFO STREAM`` (its ``entries-added``, Redis 7) and the read happen in one MULTI, so
        entries added minus entries read so far minus entries read now is exactly how many a
        trim removed before they were read (``missed``; it must stay 0 for the counts to hold).
        """
        n = 0
        for name, key in self.stream_keys.items():
            pipe = client.pipeline(transaction=True)
            if self.replica is not None:
                pipe.info("replication")
            pipe.xinfo_stream(key)
            pipe.xrange(key, f"({self.last[name]}", "+")
            replies = pipe.execute(raise_on_error=False)
            if self.replica is not None:
                role = replies.pop(0)
                if not isinstance(role, dict) or not (
                    role.get("role") == "slave" and role.get("master_link_status") == "up"
                ):
                    self.stale_reads += 1
                    raise redis.ConnectionError("not a replica in sync: choosing another")
            info, entries = replies
            if isinstance(info, Exception) or isinstance(entries, Exception):
                continue  # the stream does not exist yet
            added = int(info.get("entries-added", 0))
            with self.lock:
                for entry_id, fields in entries:
                    self.take(name, str(entry_id), fields)
                self.read_count[name] += len(entries)
                gap = added - self.read_count[name]
                if gap > self.missed[name]:
                    self.missed[name] = gap
            if entries:
                self.last[name] = str(entries[-1][0])
                n += len(entries)
        return n

    def write_times(self) -> list[float]:
        with self.lock:
            return sorted(self.times)

    def take(self, stream: str, entry_id: str, f: dict[str, Any]) -> None:
        s = self.seen
        s.entries[stream] += 1
        self.times.append(int(entry_id.partition("-")[0]) / 1000)
        if stream == "alerts":
            key = f"{f.get('source')}|{f.get('key')}"
            s.note("alerts", key, entry_id)
            s.alert_key[entry_id] = key
        elif stream == "locations":
            alert = str(f.get("alert"))
            s.located[alert] += 1
            s.methods[str(f.get("location_method"))] += 1
            if f.get("fallback_reason"):
                s.fallbacks[str(f.get("fallback_reason"))] += 1
        elif stream == "listings":
            s.note("listings", f"{f.get('site')}|{f.get('id')}", entry_id)
        elif stream == "logs" and f.get("source") == "tcp":
            for line in str(f.get("line") or f.get("lines") or "").split("\n"):
                m = TCP_LINE.search(line)
                if m:
                    s.note("tcp", m.group(1), entry_id)
                else:
                    s.other["tcp-unparsed"] += 1
        elif stream == "logs":
            s.note("logs", f"{f.get('source')}|{f.get('key')}", entry_id)
        else:
            s.other[stream] += 1


class MemorySampler:
    """Redis ``used_memory`` every second (and its peak), across restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.samples: list[tuple[float, int, int]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults-memory", daemon=True)
        self.started = time.monotonic()

    def start(self) -> MemorySampler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        from workers.core.connection import connect

        client = connect(self.url, socket_timeout=3, socket_connect_timeout=2)
        while not self.stop_event.wait(1.0):
            with contextlib.suppress(redis.RedisError, OSError):
                used = int(client.info("memory")["used_memory"])
                keys = int(client.dbsize())
                self.peak = max(self.peak, used)
                self.samples.append((round(time.monotonic() - self.started, 1), used, keys))


# --- secrets ----------------------------------------------------------------------------------


def needles(password: str, token: str) -> dict[str, str]:
    """The planted secrets, and the forms they travel in (basic auth is base64)."""
    return {
        "redis password": password,
        "source token": token,
        "source token (basic auth)": base64.b64encode(f"watch:{token}".encode()).decode(),
    }


def scan_files(root: Path, secrets: dict[str, str], allowed: Iterable[Path]) -> list[str]:
    """Every file under ``root`` holding a secret, except the ``allowed`` inputs that must
    hold them (the sources file) — those must be readable by their owner only."""
    allowed_set = {p.resolve() for p in allowed}
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits = [name for name, s in secrets.items() if s.encode() in data]
        if path.resolve() in allowed_set:
            mode = path.stat().st_mode & 0o777
            if hits and mode & 0o077:
                found.append(f"{path.relative_to(root)}: holds secrets and is mode {mode:o}")
            continue
        text = data.decode(errors="replace")
        for name in hits:
            found.append(
                f"{path.relative_to(root)}: {name} ({text.count(secrets[name])}x), first in: "
                + context(text, secrets[name], secrets)
            )
    return found


def context(text: str, secret: str, secrets: dict[str, str], width: int = 160) -> str:
    """Where ``secret`` first occurs in ``text``, with every secret masked by its name."""
    i = text.find(secret)
    snippet = text[max(0, i - width) : i + len(secret) + 40]
    for name, s in secrets.items():
        snippet = snippet.replace(s, f"<{name}>")
    return repr(snippet)


def scan_keys(client: redis.Redis, secrets: dict[str, str]) -> tuple[int, list[str]]:
    """Key names holding a secret: (keys scanned, findings)."""
    found: list[str] = []
    n = 0
    for key in client.scan_iter(count=1000):
        n += 1
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        for what, s in secrets.items():
            if s in name:
                found.append(f"key name {name.replace(s, '<' + what + '>')!r}: {what}")
    return n, found


def scan_text(label: str, text: str, secrets: dict[str, str]) -> list[str]:
    return [
        f"{label}: {what} ({text.count(s)}x), first in: {context(text, s, secrets)}"
        for what, s in secrets.items()
        if s in text
    ]
