"""The request size limit (`serve.max_request_mb`): a 413 answer before an oversized upload is parsed or held."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMIT_KEY = "serve.max_request_mb"


class TooLarge(Exception):
    """The body grew past the limit while it was read (a chunked upload declares no length)."""


class RequestSizeLimit:
    """ASGI middleware: a declared Content-Length over the limit is refused at once; a body without one is
    counted as it arrives and refused when it passes the limit."""

    def __init__(self, app: ASGIApp, max_mb: float) -> None:
        if max_mb <= 0:
            raise ValueError(f"{LIMIT_KEY} must be > 0, got {max_mb}")
        self.app = app
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * 1024 * 1024)

    def refusal(self) -> JSONResponse:
        detail = f"request body larger than {LIMIT_KEY}={self.max_mb:g} ({self.max_bytes} bytes)"
        return JSONResponse({"detail": detail, "file": None}, status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refusal()(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:  # raised while the upload was read: no answer has started
            await self.refusal()(scope, receive, send)
