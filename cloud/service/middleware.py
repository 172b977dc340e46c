"""Pure ASGI middlewares of the service: a request body cap (413) and a Server-Timing total.

    app.add_middleware(BodyLimit, max_bytes=1 << 20)
    app.add_middleware(ServerTiming)       # appends `app;dur=<ms>` to the handler's Server-Timing entries

BodyLimit answers 413 at once when Content-Length is over the cap, and otherwise reads the body
itself (chunked uploads included), counting bytes, before the app sees it; the app then gets the
buffered body. Bodies are small JSON (item ids), so buffering costs nothing worth measuring.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _send_json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 with a JSON `detail` for request bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> dict:
        return {
            "detail": f"request body of {size} bytes is over this service's limit of {self.max_bytes} bytes; "
            "send fewer item ids per request"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, 413, self._too_large(length.decode()))
        if length is None and b"chunked" not in dict(scope["headers"]).get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_json(send, 413, self._too_large(f"more than {self.max_bytes}"))
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def buffered() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, buffered, send)


class ServerTiming:
    """Adds `app;dur=<ms>` (routing, validation, handler and serialization) to the Server-Timing header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = f"app;dur={(time.perf_counter() - start) * 1e3:.3f}".encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server-timing"]
                earlier = [v for k, v in message.get("headers", []) if k.lower() == b"server-timing"]
                message = {**message, "headers": [*headers, (b"server-timing", b", ".join([*earlier, total]))]}
            await send(message)

        await self.app(scope, receive, timed)
