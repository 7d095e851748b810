"""Lua scripts, kept in ``.lua`` files and called one way: EVALSHA, reloaded after NOSCRIPT.

Each script lives in the ``lua/`` folder of the package whose concern it is, with a header naming
every KEYS and ARGV entry. A ``Script`` reads its file once per process and calls it by SHA, on a
client or queued into a pipeline, so a call costs one command however long the script is. Redis
forgets loaded scripts when it restarts (the script cache is not persisted), and a fresh server
has none: a NOSCRIPT reply loads the script and repeats the call. In a pipeline only the calls
that failed are repeated, in their order — a NOSCRIPT call did nothing, so nothing runs twice.

A script may start with the functions of shared ``lua/lib/<name>.lua`` files (``include``), so
two scripts that do one thing the same way (take a host's request slot) share its code and each
still runs as one call; ``"<package>:<name>"`` includes another package's library (every stream
writer includes ``workers.store:stream_budget``).

redis-py's own ``register_script`` is not used: in a pipeline it asks ``SCRIPT EXISTS`` before
every execute, one extra round trip on every poll.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

_BY_SHA: dict[str, Script] = {}


class Script:
    """A Lua script from ``<package>/lua/<name>.lua``, after ``<package>/lua/lib/<x>.lua`` for
    each ``x`` in ``include`` (``<other package>:<x>``: that package's ``lua/lib/<x>.lua``)."""

    def __init__(self, package: str, name: str, include: Sequence[str] = ()) -> None:
        self.name = name
        folder = resources.files(package).joinpath("lua")
        files = []
        for lib in include:
            owner, _, lib_name = lib.rpartition(":")
            lib_folder = resources.files(owner).joinpath("lua") if owner else folder
            files.append(lib_folder.joinpath("lib", f"{lib_name}.lua"))
        files.append(folder.joinpath(f"{name}.lua"))
        self.source = "\n".join(f.read_text(encoding="utf-8") for f in files)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        _BY_SHA[self.sha] = self

    def __call__(
        self, client: redis.Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()
    ) -> Any:
        """Run the script now and return its reply."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> None:
        """Add a call to a pipeline; run the pipeline with ``execute(pipe)``."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name!r})"


def execute(pipe: Any) -> list[Any]:
    """Execute a pipeline that may hold script calls, repeating those answered NOSCRIPT.

    Errors other than NOSCRIPT are raised as redis-py would (the first one), after every
    command has been sent.
    """
    stack = [args for args, _ in pipe.command_stack]
    replies = list(pipe.execute(raise_on_error=False))
    client = None
    for index, reply in enumerate(replies):
        if not isinstance(reply, NoScriptError):
            continue
        command = stack[index]
        script = _BY_SHA.get(str(command[1])) if command[0] == "EVALSHA" else None
        if script is None:
            raise reply
        client = client or redis.Redis(connection_pool=pipe.connection_pool)
        client.script_load(script.source)
        replies[index] = client.execute_command(*command)  # type: ignore[no-untyped-call]
    for reply in replies:
        if isinstance(reply, redis.RedisError):
            raise reply
    return replies
