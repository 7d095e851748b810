"""The ``watchkeeper`` command: run, check, status, sources, tail, poll, history, listen, web,
metrics.

Every user error — bad settings, a bad sources file, Redis unreachable or refusing a command
midway (out of memory, a read-only replica, a connection reset), an unknown source — ends in one
clear line per problem on stderr (secrets masked) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tasks.notify.commands import add_notify_command
from tasks.notify.config import unset_variables as unset_sink_variables
from workers import stages  # noqa: F401 (registers the stages' kinds, sections, sinks)
from workers.core import keys
from workers.core.connection import RedisUnavailable, get_client
from workers.core.redact import redact_text
from workers.core.request_profile import unset_variables as unset_profile_variables
from workers.core.runtime import Runtime, set_runtime
from workers.core.settings import Settings, SettingsError
from workers.core.source_env import EnvPolicy
from workers.core.sources_file import (
    ConfigError,
    SourcesConfig,
    find_config,
    load_config,
    no_file_config,
    own_config,
)
from workers.core.version import VERSION as __version__
from workers.ops.sources.commands import add_sources_command
from workers.polling.kinds import KINDS
from workers.polling.poll import poll_now

STREAM_NAMES = ("alerts", "logs", "listings", "locations", "changes", "health")


class UsageError(Exception):
    """A one-line problem with what the user asked for."""


def config_path(args: argparse.Namespace, settings: Settings) -> Path | None:
    """--config, WATCHKEEPER_CONFIG, ./watchkeeper.toml, else the active run's; None: no file
    (sources come from the registry; the file gives only its other sections)."""
    explicit = getattr(args, "config", None)
    own = own_config(explicit, settings.config)
    if own is not None:
        return own
    from workers.ops.supervisor import active_run

    run = active_run(settings.home_path)
    return Path(run["config"]) if run and run.get("config") else None


def make_runtime(args: argparse.Namespace) -> Runtime:
    settings = Settings.from_env()
    path = config_path(args, settings)
    if path is not None:
        load_config(path)  # validate before touching Redis
    rt = Runtime(settings, get_client(settings), path.resolve() if path is not None else None)
    set_runtime(rt)
    return rt


# --- commands -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    """Problems are errors (exit 2). A notification secret not set in this environment is a
    warning — only the delivery worker needs it — and an error with ``--strict`` (run that
    where the delivery worker runs)."""
    settings = Settings.from_env()
    path = config_path(args, settings) or find_config(None)
    config = load_config(path)
    refused = EnvPolicy.of(settings, config).config_problems(config)
    if refused:
        raise ConfigError(str(path), refused)
    unset = unset_sink_variables(config)
    if unset and args.strict:
        raise ConfigError(str(path), unset)
    for line in unset:
        print(f"warning: {line}", file=sys.stderr)
    tcp = f"tcp {config.tcp.host}:{config.tcp.port}" if config.tcp else "no tcp listener"
    kinds = sorted(KINDS, key=lambda kind: kind.section)
    counts = ", ".join(f"{len(config.of_kind(kind.name))} {kind.section}" for kind in kinds)
    print(f"{path}: ok — {counts}, {tcp}")
    for source in config.sources:  # a secret this machine lacks: only its polls need it
        for line in unset_profile_variables(source.request, os.environ):
            print(
                f"warning: source '{source.name}': {line} here (its polls fail until it is)",
                file=sys.stderr,
            )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workers.ops.supervisor import Supervisor, active_run

    settings = Settings.from_env()
    try:
        settings.home_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"WATCHKEEPER_HOME={settings.home_path}: {exc.strerror or exc}") from None
    running = active_run(settings.home_path)
    if running:
        raise UsageError(
            f"a run is already active under {settings.home_path} "
            f"(pid {running['pid']}); stop it first"
        )
    if settings.web_port:
        from workers.ops.web.serve import BindRefused, check_bind, url

        try:
            check_bind(settings.web_host, settings.web_token)
        except BindRefused as exc:
            raise UsageError(f"{exc}; or WATCHKEEPER_WEB_PORT=0 to run without it") from None
    get_client(settings).close()  # Redis must answer before anything starts
    demo = receiver = None
    demo_path: Path | None = None
    if args.demo:
        from tasks.notify.receiver import LocalReceiver
        from workers.ops.demo import DemoServer

        demo = DemoServer(port=args.demo_port).start()
        receiver = LocalReceiver().start()
        tcp_port = _free_port()
        demo_path = demo.write_config(settings.home_path / "demo" / "watchkeeper.toml", tcp_port)
        with demo_path.open("a", encoding="utf-8") as sources:
            sources.write(receiver.sink_toml())
        demo.start_tcp_trickle("127.0.0.1", tcp_port)
        print(
            f"[demo] sample sources on {demo.base}, TCP listener on 127.0.0.1:{tcp_port}, "
            f"notifications to a local receiver on 127.0.0.1:{receiver.port}"
            + (
                f", dashboard on {url(settings.web_host, settings.web_port)}"
                if settings.web_port
                else ""
            )
        )
    path = demo_path if demo is not None else own_config(args.config, settings.config)
    config = load_config(path) if path is not None else no_file_config()
    _apply_at_start(settings, path, config, demo=args.demo)
    supervisor = Supervisor(
        settings, config, concurrency=args.concurrency or settings.concurrency, demo_env=args.demo
    )
    try:
        code = supervisor.run(duration=args.duration)
    finally:
        if demo is not None:
            demo.stop()
        if receiver is not None:
            receiver.stop()
    if args.duration is not None:
        _print_summary(supervisor.url, settings, config.path or "none")
    return code


def _apply_at_start(
    settings: Settings, path: Path | None, config: SourcesConfig, demo: bool
) -> None:
    """``run`` applies its file before starting anything, so a conflict is one line and exit
    2 here rather than a beat log line; beat applies it again whenever it changes. A real run
    first removes what an earlier ``--demo`` under this home left in the registry."""
    from workers.core.source_registry import file_owner
    from workers.ops.sources.apply import apply_file, release

    client = get_client(settings)
    try:
        if not demo:
            demo_file = (settings.home_path / "demo" / "watchkeeper.toml").resolve()
            gone, _ = release(client, settings, file_owner(str(demo_file)))
            if gone.removed:
                print(f"[run] removed the {len(gone.removed)} sources of an earlier --demo")
        if path is None:
            size = client.hlen(keys.SOURCES.key(settings))
            print(
                f"[run] no sources file: serving the {size} sources of the registry "
                "(`watchkeeper sources add` adds one; --config FILE applies a file)"
            )
            return
        for line in apply_file(client, settings, path, config=config).report():
            print(f"[run] {line}")
    finally:
        client.close()


def _print_summary(url: str, settings: Settings, path: str) -> None:
    from workers.core.connection import connect

    try:
        client = connect(url, socket_timeout=5)
        lens = {n: client.xlen(keys.STREAM.key(settings, n)) for n in STREAM_NAMES}
        mem = client.info("memory").get("used_memory_human")
        client.close()
    except Exception as exc:  # the run is over; a summary is best effort
        print(f"[run] summary unavailable: {exc}")
        return
    print(
        "[run] summary: "
        + ", ".join(f"{n} {v}" for n, v in lens.items())
        + f"; redis used memory {mem}; sources {path}"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmd_status(args: argparse.Namespace) -> int:
    from workers.ops.status import collect_status, render_text

    rt = make_runtime(args)
    status = collect_status(rt)
    print(json.dumps(status, indent=2, default=str) if args.json else render_text(status))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from workers.store.streams import CappedStream
    from workers.tcp.entries import unpack

    if args.stream not in STREAM_NAMES:
        raise UsageError(f"stream {args.stream!r}: expected one of {', '.join(STREAM_NAMES)}")
    rt = make_runtime(args)
    stream = CappedStream(rt.redis, keys.STREAM.key(rt.settings, args.stream), 0)
    entries = stream.latest(args.n)
    last = entries[-1][0] if entries else "$"
    for entry_id, fields in unpack(entries):  # a packed logs entry: one line each
        _print_entry(entry_id, fields, args.json)
    while args.follow:
        try:
            for entry_id, fields in unpack(stream.after(last, count=100, block_ms=1000)):
                _print_entry(entry_id, fields, args.json)
                last = entry_id
        except KeyboardInterrupt:
            break
    return 0


def _print_entry(entry_id: str, fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": entry_id, **fields}, ensure_ascii=False, default=str))
        return
    text = (
        fields.get("title")
        or fields.get("line")
        or fields.get("name")
        or json.dumps(fields.get("fields") or fields, ensure_ascii=False, default=str)
    )
    extra = ""
    if isinstance(fields.get("location"), dict):
        loc = fields["location"]
        extra = f"  @ {loc.get('name')}, {loc.get('country_code')}"
    print(
        f"{entry_id}  {fields.get('source') or fields.get('site') or '-'}  {text}{extra}",
        flush=True,
    )


def cmd_poll(args: argparse.Namespace) -> int:
    rt = make_runtime(args)
    source = rt.sources.get(args.name)
    if source is None:
        raise UsageError(f"source {args.name!r} is not in the source registry")
    # Sites always list their items: `poll` is how users tune selectors before scheduling.
    show_items = args.items or args.json or source.kind == "site"
    result = poll_now(rt, source, show_items=show_items)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        for item in result.get("items", []) if show_items else []:
            print(json.dumps(item, ensure_ascii=False, default=str))
        print(
            f"{result['source']}: {result['status']} — fetched {result['fetched']}, new "
            f"{result['new']}, duplicate {result['duplicate']} in {result['elapsed_s']:.2f}s"
            + (f"; error: {result['error']}" if result.get("error") else "")
            + "".join(f"; warning: {w}" for w in result.get("warnings", []))
        )
    return 0 if result["status"] != "error" else 1


def cmd_history(args: argparse.Namespace) -> int:
    rt = make_runtime(args)
    from tasks.scrape.history import history_rows

    rows = history_rows(rt, args.site, args.n)
    for row in rows:
        print(
            json.dumps(row, default=str)
            if args.json
            else "  ".join(f"{k}={v}" for k, v in row.items())
        )
    if not rows and not args.json:
        print(f"no runs recorded for {args.site!r}")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    rt = make_runtime(args)
    tcp = rt.config().tcp
    host = args.host or (tcp.host if tcp else "127.0.0.1")
    port = args.port if args.port is not None else (tcp.port if tcp else 5140)
    from workers.tcp.listener import main as listen

    return listen(rt, host, port)


def cmd_web(args: argparse.Namespace) -> int:
    from workers.ops.web.serve import BindRefused, check_bind, serve

    settings = Settings.from_env()
    host = args.host or settings.web_host
    port = args.port if args.port is not None else settings.web_port
    try:
        check_bind(host, settings.web_token)  # before Redis: one line, exit 2
    except BindRefused as exc:
        raise UsageError(str(exc)) from None
    rt = make_runtime(args)
    from workers import app

    def dispatch(name: str, args: list[Any], kwargs: dict[str, Any], **options: Any) -> Any:
        return app.send_task(name, args=args, kwargs=kwargs, ignore_result=True, **options)

    queue = str(app.conf.task_default_queue)
    return serve(rt, host, port or 9809, dispatch, read_only=args.read_only, queue=queue)


def cmd_metrics(args: argparse.Namespace) -> int:
    rt = make_runtime(args)
    from workers.ops.metrics import MetricsUnavailable, serve

    try:
        return serve(
            rt, args.port or rt.settings.metrics_port, args.host or rt.settings.metrics_host
        )
    except MetricsUnavailable as exc:
        raise UsageError(str(exc)) from None


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watchkeeper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"watchkeeper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if config:
            p.add_argument("--config", help="sources file (TOML)")
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "run worker (prefork) + beat (+ TCP listener), supervised")
    p.add_argument(
        "--demo", action="store_true", help="run against the bundled local sample sources (offline)"
    )
    p.add_argument("--duration", type=float, help="stop after S seconds and print a summary")
    p.add_argument("--concurrency", type=int, help="prefork pool size")
    p.add_argument("--demo-port", type=int, default=0, help="port of the demo's sample server")
    p = add("check", cmd_check, "validate the sources file")
    p.add_argument(
        "--strict",
        action="store_true",
        help="a notification secret not set here is an error (run it where deliveries are sent)",
    )
    p = add("status", cmd_status, "show sources, buffers, workers and Redis usage")
    p.add_argument("--json", action="store_true", help="one JSON object, sections as keys")
    p = add("tail", cmd_tail, "show the newest entries of a stream", config=False)
    p.add_argument("stream", help="alerts, logs, listings or locations")
    p.add_argument("-n", type=int, default=10, help="how many (default 10)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("poll", cmd_poll, "poll one source once, now, in the foreground")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--items", action="store_true", help="print the items extracted")
    p = add("history", cmd_history, "show a site's recorded scrape runs, newest first")
    p.add_argument("site")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p = add("listen", cmd_listen, "run the TCP log-line listener in the foreground")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    add_notify_command(sub, make_runtime)
    add_sources_command(sub)
    p = add("web", cmd_web, "serve the web dashboard (sources, items, dead letters, memory)")
    p.add_argument("--host", help="address (default WATCHKEEPER_WEB_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default WATCHKEEPER_WEB_PORT, 9809)")
    p.add_argument("--read-only", action="store_true", help="show everything, offer no actions")
    p = add("metrics", cmd_metrics, "serve Prometheus metrics read from Redis")
    p.add_argument("--host", help="address to bind (default WATCHKEEPER_METRICS_HOST, loopback)")
    p.add_argument("--port", type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tail":
        args.config = None
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except (SettingsError, RedisUnavailable, UsageError) as exc:
        print(f"watchkeeper: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:  # refused or cut midway: out of memory, READONLY, a reset
        why = redact_text(f"{type(exc).__name__}: {exc}").replace("\n", " ")[:300]
        print(f"watchkeeper: Redis: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
