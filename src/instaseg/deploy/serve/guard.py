"""The outermost layer of every request: body-size limit, metrics, and no stack trace in any answer.

A body larger than the limit is refused with 413 from its Content-Length, before a byte of it is kept; a body
sent without a length is counted as it streams and refused when it passes the limit. The refused body is read and
dropped (up to a bound) before answering, so that clients still sending it see the 413 rather than a reset
connection. Any exception that escapes a route becomes a 500 with a log id, and the traceback goes to the log
under that id, never to the client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from instaseg.deploy.serve.metrics import Metrics
from instaseg.deploy.serve.schemas import error_body, new_log_id

logger = logging.getLogger(__name__)
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DRAIN_FACTOR = 4  # read and drop a refused body up to this many times the limit, then close


class _BodyTooLarge(Exception):
    pass


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a refused body, at most ``budget`` bytes."""
    seen = 0
    while seen <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class GuardMiddleware:
    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 0, "received": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            if self._declared_length(scope) > self.max_body_bytes:
                await self._refuse_too_large(receive, recording_send)
            else:
                await self.app(scope, counting_receive, recording_send)
        except _BodyTooLarge:
            if not state["status"]:
                await self._refuse_too_large(receive, recording_send)
        except Exception:
            log_id = new_log_id()
            logger.exception("unhandled error answering %s %s (log id %s)", scope["method"], scope["path"], log_id)
            if not state["status"]:
                await send_json(recording_send, 500, error_body(500, "internal server error", log_id))
        finally:
            self.metrics.observe_request(scope["path"], state["status"] or 500, time.perf_counter() - start)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0  # the server's HTTP parser refuses a malformed length before we see it
        return 0

    async def _refuse_too_large(self, receive: Receive, send: Send) -> None:
        await _drain(receive, DRAIN_FACTOR * self.max_body_bytes)
        limit_mb = self.max_body_bytes / (1024 * 1024)
        message = f"the request body is larger than this server's {limit_mb:g} MB limit"
        await send_json(send, 413, error_body(413, message))
