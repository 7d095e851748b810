"""Request bodies, read once, bounded in bytes and in time, before anything else sees them.

The dashboard's forms and the REST API's JSON are small (a CSRF token, a dead letter's ref, a
source's definition), so a body is read here whole — at most ``WATCHKEEPER_WEB_MAX_BODY`` bytes
within ``WATCHKEEPER_WEB_BODY_TIMEOUT`` seconds of the request's headers — and handed on to the
rest of the app from memory. The OPML uploads (``upload_paths``) have their own, larger cap,
``WATCHKEEPER_WEB_MAX_UPLOAD``, under the same rules. A body announced as longer
(``Content-Length``) is refused before a byte of it is read; one that grows past the cap as it
arrives (chunked) is refused at the cap; one that trickles, or stops short of its announced
length, is refused at the deadline. Each refusal (413, 408) closes the connection, so the rest
of the body is never read: a 150 MB upload costs the server its first few kilobytes.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.ops.web.replies import refusal

CLOSE = {"Connection": "close"}


class TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: reads the body under the caps above, then replays it to the app
    (and leaves it in ``request.state.body`` for the middleware after this one)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float,
        upload_bytes: int = 0,
        upload_paths: tuple[str, ...] = (),
    ) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.upload_bytes, self.upload_paths = max(upload_bytes, max_bytes), upload_paths

    def cap(self, scope: Scope) -> int:
        """The byte cap of this request's body: an upload path's, else the common one."""
        return self.upload_bytes if scope.get("path") in self.upload_paths else self.max_bytes

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
        cap = self.cap(scope)
        if announced and (not announced.isdigit() or int(announced) > cap):
            await self.refuse(413, f"request body over {cap} bytes", scope, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                body = await self.read(receive, cap)
        except TooLarge:
            await self.refuse(413, f"request body over {cap} bytes", scope, send)
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

    async def read(self, receive: Receive, cap: int) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise TooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    @staticmethod
    async def refuse(status: int, why: str, scope: Scope, send: Send) -> None:
        """Answer and close the connection: the unread rest of the body is never read."""

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await refusal(scope, status, why, CLOSE)(scope, nothing, send)
