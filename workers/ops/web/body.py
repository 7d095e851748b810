"""Request bodies, read once, bounded in bytes and in time, before anything else sees them.

The dashboard's forms are a few hundred bytes (a CSRF token, a dead letter's ref, the login
token), so a body is read here whole — at most ``WATCHKEEPER_WEB_MAX_BODY`` bytes within
``WATCHKEEPER_WEB_BODY_TIMEOUT`` seconds of the request's headers — and handed on to the rest
of the app from memory. A body announced as longer (``Content-Length``) is refused before a byte
of it is read; one that grows past the cap as it arrives (chunked) is refused at the cap; one
that trickles, or stops short of its announced length, is refused at the deadline. Each refusal
(413, 408) closes the connection, so the rest of the body is never read: a 150 MB upload costs
the server its first few kilobytes.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = {"Connection": "close"}


class TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: reads the body under the caps above, then replays it to the app
    (and leaves it in ``request.state.body`` for the middleware after this one)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        announced = headers.get("content-length", "").strip()
        if not announced and "transfer-encoding" not in headers:
            scope.setdefault("state", {})["body"] = b""  # HTTP: no length, not chunked: no body
            await self.app(scope, receive, send)
            return
        if announced and (not announced.isdigit() or int(announced) > self.max_bytes):
            await self.refuse(413, f"request body over {self.max_bytes} bytes", scope, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                body = await self.read(receive)
        except TooLarge:
            await self.refuse(413, f"request body over {self.max_bytes} bytes", scope, send)
            return
        except TimeoutError:
            await self.refuse(408, f"request body not sent within {self.timeout:g} s", scope, send)
            return
        if body is None:
            return  # the client went away
        scope.setdefault("state", {})["body"] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def read(self, receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise TooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    @staticmethod
    async def refuse(status: int, why: str, scope: Scope, send: Send) -> None:
        """Answer and close the connection: the unread rest of the body is never read."""

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await PlainTextResponse(why + "\n", status_code=status, headers=CLOSE)(scope, nothing, send)
