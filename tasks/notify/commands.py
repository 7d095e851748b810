"""``watchkeeper notify``: test a sink now, show its state, retry or drop its dead letters.

``add_notify_command(subparsers, make_runtime)`` adds the command to the CLI's parser;
``make_runtime(args)`` is the CLI's (it validates the sources file and connects to Redis). A
user error — an unknown sink or dead letter — is one line on stderr and exit status 2.

    watchkeeper notify test NAME            send a test message through every destination now
    watchkeeper notify status [NAME] [--json] [-n N]
    watchkeeper notify retry NAME (REF | --all)
    watchkeeper notify drop NAME (REF | --all)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from tasks.notify.config import Sink, notify_config
from tasks.notify.dead_letters import dead_letters, drop, retry
from tasks.notify.delivery_log import delivery_log
from tasks.notify.send import Message, send
from tasks.notify.status import sink_status
from workers.core.clock import iso, now_iso
from workers.core.runtime import Runtime

MakeRuntime = Callable[[argparse.Namespace], Runtime]


class SinkNotFound(Exception):
    pass


def add_notify_command(sub: Any, make_runtime: MakeRuntime) -> argparse.ArgumentParser:
    """Add ``notify`` and its actions to the CLI's subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "notify", help="test sinks, show their state, retry or drop dead letters"
    )
    parser.add_argument("--config", help="sources file (TOML)")
    actions = parser.add_subparsers(dest="notify_action", required=True, metavar="ACTION")

    def action(name: str, run: Callable[[argparse.Namespace, Runtime], int], help: str) -> Any:
        p = actions.add_parser(name, help=help, description=help)
        p.set_defaults(func=lambda args: _guarded(run, args, make_runtime))
        return p

    p = action("test", cmd_test, "send a test message through every destination of a sink now")
    p.add_argument("name")
    p = action("status", cmd_status, "show sinks: counts, destinations, dead letters, recent log")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("-n", type=int, default=5, help="delivery-log entries and dead letters shown")
    for name, run, help in (
        ("retry", cmd_retry, "send dead letters again (one by its ref, or --all)"),
        ("drop", cmd_drop, "delete dead letters (one by its ref, or --all)"),
    ):
        p = action(name, run, help)
        p.add_argument("name")
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("ref", nargs="?", help="a dead letter's ref (see notify status)")
        which.add_argument("--all", action="store_true")
    return parser


def _guarded(
    run: Callable[[argparse.Namespace, Runtime], int],
    args: argparse.Namespace,
    make_runtime: MakeRuntime,
) -> int:
    rt = make_runtime(args)
    try:
        return run(args, rt)
    except SinkNotFound as exc:
        print(f"watchkeeper: {exc}", file=sys.stderr)
        return 2


def find_sink(rt: Runtime, name: str) -> Sink:
    config = notify_config(rt.config())
    sink = config.sink(name)
    if sink is None:
        names = ", ".join(s.name for s in config.sinks) or "none"
        raise SinkNotFound(f"sink {name!r} is not in {rt.config_path} (sinks: {names})")
    return sink


def cmd_test(args: argparse.Namespace, rt: Runtime) -> int:
    sink = find_sink(rt, args.name)
    s = rt.settings
    message = Message(
        f"watchkeeper: test message for sink '{sink.name}'",
        f"This is a test of sink '{sink.name}', sent at {now_iso()} by `watchkeeper notify test`.",
        f"test:{int(time.time())}:{sink.name}",
    )
    failed = 0
    for dest in sink.destinations:
        url = dest.url()
        if not url:
            print(f"{dest.label}: failed: {dest.variable} is not set here")
            failed += 1
            continue
        result = send(
            url, message, s.notify_timeout, s.notify_max_chars, reply_cap=s.notify_max_reply_bytes
        )
        print(f"{dest.label}: " + ("ok" if result.ok else f"failed: {result.error}"))
        failed += 0 if result.ok else 1
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace, rt: Runtime) -> int:
    config = notify_config(rt.config())
    sinks = [find_sink(rt, args.name)] if args.name else list(config.sinks)
    now = time.time()
    report = {
        sink.name: {
            **sink_status(rt, sink, now),
            "log": delivery_log(rt, sink, args.n),
            "dead": dead_letters(rt, sink, args.n),
        }
        for sink in sinks
    }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return 0
    if not sinks:
        print(f"no sinks in {rt.config_path}")
    for name, s in report.items():
        print(
            f"{name}: delivered {s['delivered']}, retried {s['retried']}, failed {s['failed']},"
            f" missed {s['missed']}, lag {s['lag']}, outbox {s['outbox']['size']}/"
            f"{s['outbox']['cap']}, dead letters {s['dead_letters']['size']}/"
            f"{s['dead_letters']['cap']}"
        )
        for label, d in s["destinations"].items():
            print(
                f"  → {label}: delivered {d['delivered']}, retried {d['retried']}, "
                f"failed {d['failed']}, owed {d['owed']}"
            )
        for entry in s["log"]:
            print(
                f"  {iso(entry['at'])}  {entry['outcome']:<11}  {entry['dest']}  {entry['key']}"
                + (f"  {entry['error']}" if entry.get("error") else "")
            )
        for dead in s["dead"]:
            print(
                f"  dead {dead['ref']}  {dead['destination']}  {dead.get('attempts')} attempts"
                f"  {dead.get('reason')}  {str(dead.get('title', ''))[:60]}"
            )
    return 0


def cmd_retry(args: argparse.Namespace, rt: Runtime) -> int:
    sink = find_sink(rt, args.name)
    requeued, left = retry(rt, sink, None if args.all else args.ref)
    if not requeued and not left and not args.all:
        raise SinkNotFound(f"sink {sink.name!r} has no dead letter {args.ref!r}")
    print(
        f"{sink.name}: {requeued} dead letter(s) queued again"
        + (f"; {left} left (their destination is no longer configured)" if left else "")
    )
    return 0


def cmd_drop(args: argparse.Namespace, rt: Runtime) -> int:
    sink = find_sink(rt, args.name)
    removed = drop(rt, sink, None if args.all else args.ref)
    if not removed and not args.all:
        raise SinkNotFound(f"sink {sink.name!r} has no dead letter {args.ref!r}")
    print(f"{sink.name}: {removed} dead letter(s) dropped")
    return 0
