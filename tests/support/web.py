"""The dashboard on a real uvicorn server in a thread of the test process (port 0)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.support.helpers import wait_for
from workers.core.dead_letters import Dispatch
from workers.core.runtime import Runtime
from workers.ops.web.app import create_app


class Sent:
    """A dispatch that records the tasks it was asked to send (and sends them if given an app)."""

    def __init__(self, app: Any = None) -> None:
        self.app, self.calls = app, []  # type: ignore[var-annotated]

    def __call__(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        self.calls.append((name, args, kwargs))
        return self.app.send_task(name, args=args, kwargs=kwargs) if self.app else None


@contextlib.contextmanager
def dashboard(
    rt: Runtime, dispatch: Dispatch, *, token: str = "", read_only: bool = False
) -> Iterator[str]:
    """Serve the dashboard on 127.0.0.1; yields its base URL."""
    app = create_app(rt, dispatch, token=token, read_only=read_only)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, message="dashboard start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
