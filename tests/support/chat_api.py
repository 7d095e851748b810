"""A real local HTTP endpoint speaking the OpenAI chat-completions shape, in failure modes.

``ChatAPI(http_server, modes)`` routes ``POST /v1/chat/completions``; each call takes the next
mode from ``modes`` (the last one repeats). Modes: good, slow, 429, 500, 403, malformed,
missing (leaves out the first ``drop`` ids), extra (adds ids nobody sent).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.helpers import HTTPFixtureServer, respond

PLACE = {
    "name": "Lyon",
    "country_code": "FR",
    "admin": "Auvergne-Rhone-Alpes",
    "lat": 45.75,
    "lon": 4.85,
    "precision": "city",
}


class ChatAPI:
    def __init__(
        self,
        server: HTTPFixtureServer,
        modes: list[str],
        drop: int = 3,
        slow_s: float = 1.5,
        retry_after: str = "0",
    ) -> None:
        self.server, self.modes, self.drop = server, list(modes), drop
        self.slow_s, self.retry_after = slow_s, retry_after
        self.calls: list[dict[str, Any]] = []  # request bodies, in arrival order
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server.route("/v1/chat/completions", self._handle)

    @property
    def base_url(self) -> str:
        return self.server.url("/v1")

    def sent_ids(self, call: int) -> list[str]:
        content = json.loads(self.calls[call]["messages"][1]["content"])
        return [a["id"] for a in content["alerts"]]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = json.loads(req.rfile.read(int(req.headers.get("Content-Length", "0"))))
        with self._lock:
            mode = self.modes[min(len(self.calls), len(self.modes) - 1)]
            self.calls.append(body)
            self.headers.append(dict(req.headers))
        ids = [a["id"] for a in json.loads(body["messages"][1]["content"])["alerts"]]
        if mode == "slow":
            time.sleep(self.slow_s)
            mode = "good"
        if mode in ("429", "500", "403"):
            headers = {"Retry-After": self.retry_after} if mode == "429" else {}
            respond(req, int(mode), json.dumps({"error": {"message": mode}}), headers)
            return
        if mode == "malformed":
            respond(req, 200, completion('{"locations": {"oops'))
            return
        answer: dict[str, Any] = {i: PLACE for i in ids}
        if mode == "missing":
            answer = {i: PLACE for i in ids[self.drop :]}
        if mode == "extra":
            answer.update({f"intruder-{n}": PLACE for n in range(5)})
        respond(
            req,
            200,
            completion(json.dumps({"locations": answer})),
            {"Content-Type": "application/json"},
        )


def completion(content: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "moonshot-v1-8k",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
        }
    )
