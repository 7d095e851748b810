"""``watchkeeper run``: worker (prefork) + delivery worker + beat (+ TCP listener, dashboard) as
one supervised group.

Two workers: the polling pool (``--queues celery``: polls, cleanup, location batches) and a
small delivery worker of its own (``--queues notify``, WATCHKEEPER_NOTIFY_CONCURRENCY processes,
node ``watchkeeper-notify-<pid>@host``), so a slow notification receiver never takes a process
that should be polling.

The supervisor owns the embedded Redis (when REDIS_URL is unset) and hands its URL to every
child through ``REDIS_URL``, so exactly one server serves the run and it stops with the run.
Each child runs in its own process group; on Ctrl-C or SIGTERM the supervisor asks each to
shut down warmly (a Celery worker finishes its current tasks), then kills any group still
there, so no worker, pool child, beat, listener or redis-server outlives the run.

``WATCHKEEPER_HOME/run.json`` records the active run (pid, sources file, Redis URL) so other
CLI commands in another terminal use the same sources file and Redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from workers.core import keys
from workers.core.connection import connect, resolve_url
from workers.core.files import write_private
from workers.core.redact import redact_url
from workers.core.settings import Settings
from workers.core.sources_file import SourcesConfig

STOP_TIMEOUT = 30.0
DEFAULT_QUEUE, NOTIFY_QUEUE = "celery", "notify"
"""The broker queues of the polling pool and of the delivery worker (``workers.celery_app``)."""
DEMO_ENV = {
    # The demo advances every few seconds; poll and flush at the same pace, gently.
    "WATCHKEEPER_LOCATION_FLUSH_INTERVAL": "5",
    "WATCHKEEPER_HOST_DELAY": "0.1",
    "MOONSHOT_CLEANUP_INTERVAL": "60",
}


def run_file(home: Path) -> Path:
    return home / "run.json"


def active_run(home: Path) -> dict[str, Any] | None:
    """The run recorded under ``home`` if its supervisor is still alive."""
    try:
        info: dict[str, Any] = json.loads(run_file(home).read_text())
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["create_time"])) < 1:
            return info
    except (OSError, ValueError, KeyError, psutil.Error):
        pass
    return None


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """For ``preexec_fn``: the child gets SIGTERM when the supervisor dies, even by SIGKILL.

    Children run in their own sessions (so a Ctrl-C reaches only the supervisor, which stops
    them in order); without this, a killed supervisor left worker, beat and listener running,
    and the next ``run`` added a second beat. SIGTERM gives each a warm shutdown. The signal is
    tied to the thread that started the child: the supervisor starts children from its main
    thread only.
    """

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    optional: bool = False
    """Exiting too often stops only this child (the dashboard), not the run."""
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL whatever is left of this child's process group (pool children included)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()


def child_commands(
    settings: Settings, config: SourcesConfig, concurrency: int, logs: Path
) -> list[Child]:
    py = sys.executable
    children = [
        Child(
            "worker",
            [
                py,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--queues",
                DEFAULT_QUEUE,
                "--hostname",
                f"watchkeeper-{os.getpid()}@%h",
                "--without-mingle",
            ],
            logs / "worker.log",
        ),
        Child(
            "notify",
            [
                py,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(settings.notify_concurrency),
                "--loglevel",
                "INFO",
                "--queues",
                NOTIFY_QUEUE,
                "--hostname",
                f"watchkeeper-notify-{os.getpid()}@%h",
                "--without-mingle",
            ],
            logs / "notify.log",
        ),
        Child(
            "beat",
            [
                py,
                "-m",
                "celery",
                "-A",
                "workers",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.home_path / "celerybeat-schedule"),
            ],
            logs / "beat.log",
        ),
    ]
    if config.tcp is not None:
        children.append(
            Child("listener", [py, "-m", "workers.cli", "listen"], logs / "listener.log")
        )
    if settings.web_port:
        web = [py, "-m", "workers.cli", "web"]
        children.append(Child("web", web, logs / "web.log", optional=True))
    return children


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        config: SourcesConfig,
        *,
        concurrency: int,
        demo_env: bool = False,
        progress: bool = True,
    ) -> None:
        self.settings, self.config = settings, config
        self.home = settings.home_path
        self.concurrency = concurrency
        self.demo_env = demo_env
        self.progress = progress
        self.stop_event = threading.Event()
        self.children: list[Child] = []
        self.started = time.monotonic()
        self.url = ""

    @property
    def config_file(self) -> str:
        """The run's sources file, absolute; empty: none (the run serves the registry)."""
        return str(Path(self.config.path).resolve()) if self.config.path else ""

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.demo_env:
            env.update({k: v for k, v in DEMO_ENV.items() if k not in os.environ})
            env["MOONSHOT_API_KEY"] = ""  # the demo is offline: gazetteer only
        env.update(
            {
                "REDIS_URL": self.url,
                "WATCHKEEPER_CONFIG": self.config_file,
                "WATCHKEEPER_HOME": str(self.home),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def run(self, duration: float | None = None) -> int:
        self.url = resolve_url(self.settings)
        self._record()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stop_event.set())
        env = self.environment()
        self.children = child_commands(
            self.settings, self.config, self.concurrency, self.home / "logs"
        )
        for child in self.children:
            child.start(env)
        print(
            f"[run] redis {redact_url(self.url)}; sources file {self.config.path or 'none'}; logs "
            f"{self.home / 'logs'}; pids "
            + ", ".join(f"{c.name}={c.proc.pid}" for c in self.children if c.proc),
            flush=True,
        )
        try:
            self._watch(env, duration)
        finally:
            self.shutdown()
        return 0

    def _watch(self, env: dict[str, str], duration: float | None) -> None:
        deadline = None if duration is None else self.started + duration
        last_line = 0.0
        while not self.stop_event.wait(1.0):
            if deadline is not None and time.monotonic() >= deadline:
                break
            for child in self.children:
                if not child.alive():
                    code = child.proc.returncode if child.proc else None
                    if child.optional and child.restarts >= 5:
                        continue  # given up on; reported when it last exited
                    if child.restarts >= 5:
                        print(
                            f"[run] {child.name} exited ({code}) too often; stopping",
                            file=sys.stderr,
                            flush=True,
                        )
                        self.stop_event.set()
                        break
                    child.restarts += 1
                    print(
                        f"[run] {child.name} exited ({code}); restarting "
                        f"({child.restarts}/5), see {child.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
                    child.kill_group()
                    child.start(env)
            interactive = sys.stdout.isatty()
            if self.progress and (interactive or time.monotonic() - last_line >= 10):
                line = self.progress_line()
                print(
                    ("\r" + line + "\033[K") if interactive else line,
                    end="" if interactive else "\n",
                    flush=True,
                )
                last_line = time.monotonic()
        if sys.stdout.isatty():
            print()

    def progress_line(self) -> str:
        try:
            client = connect(self.url, socket_timeout=2)
            lens = {
                name: client.xlen(keys.STREAM.key(self.settings, name))
                for name in ("alerts", "logs", "listings")
            }
            mem = client.info("memory").get("used_memory_human", "?")
            client.close()
        except Exception as exc:  # progress must never stop the run
            return f"[run] {time.monotonic() - self.started:.0f}s redis unavailable: {exc}"
        alive = sum(c.alive() for c in self.children)
        return (
            f"[run] {time.monotonic() - self.started:.0f}s  alerts {lens['alerts']}  "
            f"logs {lens['logs']}  listings {lens['listings']}  redis {mem}  "
            f"processes {alive}/{len(self.children)} up"
        )

    def shutdown(self) -> None:
        print(
            "[run] stopping: warm shutdown of worker, delivery worker, beat"
            + (", listener" if self.config.tcp else ""),
            flush=True,
        )
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(c.alive() for c in self.children) and time.monotonic() < deadline:
            time.sleep(0.1)
        for child in self.children:
            child.kill_group()
        run_file(self.home).unlink(missing_ok=True)

    def _record(self) -> None:
        me = psutil.Process()
        write_private(
            run_file(self.home),
            json.dumps(
                {
                    "pid": me.pid,
                    "create_time": me.create_time(),
                    "config": self.config_file,
                    "redis_url": redact_url(self.url),
                }
            ),
        )
