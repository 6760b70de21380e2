"""Refuse oversized request bodies before any of them is parsed."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofold.http.problems import PayloadTooLarge, problem

DEFAULT_BODY_LIMIT = 1024 * 1024  # 1 MiB


class BodyLimit:
    """ASGI middleware: 413 when ``Content-Length`` says too much, or when a chunked body grows past it.

    The declared length is checked before the app runs; a body without one is counted as it
    arrives, and reading stops at the limit, so a huge body is never held in memory.
    """

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await problem(413, "Payload too large", str(PayloadTooLarge(self.limit)), "too-large")(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
