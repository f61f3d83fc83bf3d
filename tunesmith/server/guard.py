"""The checks every request passes before a route sees it (an ASGI middleware, outermost):

- Host: on a loopback bind only loopback names are answered, so a web page whose domain is re-pointed
  at 127.0.0.1 (DNS rebinding) cannot talk to the server.
- Token: with --token, every /api route but /api/health needs 'Authorization: Bearer TOKEN' (GET routes
  also take ?access_token=, for <audio src> and EventSource, which cannot set headers).
- Origin: a state-changing request from a browser page of another origin is refused unless that
  origin was listed with --cors (CORS preflights are answered by the CORS middleware inside).
- Size: a body larger than the limit is refused, whether it has a Content-Length or comes chunked
  (an upload's route counts its bytes itself as it streams them to disk: it is never held here).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs, urlsplit

from .settings import ANY_ADDRESS, LOOPBACK_NAMES, ServerSettings

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
OPEN_PATHS = ("/api/health",)  # answered without a token: clients probe it before anything else
UPLOAD_PATH = "/api/uploads"
UPLOAD_SLACK = 64 * 1024  # bytes of a form's boundaries and headers, beyond the file's own


def upload_too_large(settings: ServerSettings) -> str:
    return f"an upload may have at most {settings.upload_limit / 2**20:g} MiB"


def host_name(header: str) -> str:
    """'example.com:8420' -> 'example.com'; '[::1]:8420' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings
        bound = settings.host.strip("[]").lower()
        self.any_host = bound in ANY_ADDRESS
        self.hosts = {*LOOPBACK_NAMES, bound}
        self.token = settings.token.encode() if settings.token else None
        self.cors = set(settings.cors)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.hosts:
            shown = host if len(host) <= 60 else host[:57] + "..."
            return await refuse(send, 400, f"Host {shown!r} is not this server's address (it answers "
                                           f"{', '.join(sorted(self.hosts))})")
        method, path = scope["method"], scope["path"]
        if method != "OPTIONS":
            if self.token and path.startswith("/api/") and path not in OPEN_PATHS and not self._authorized(
                    headers, scope, method):
                return await refuse(send, 401, "this server needs 'Authorization: Bearer TOKEN' (the --token "
                                               "it was started with)", [(b"www-authenticate", b"Bearer")])
            origin = headers.get("origin")
            if method in STATE_CHANGING and origin is not None and not self._origin_ok(origin, host):
                shown = origin if len(origin) <= 60 else origin[:57] + "..."
                return await refuse(send, 403, f"requests from the web page at {shown!r} are refused: start the "
                                               "server with --cors ORIGIN to allow it")
        if method not in STATE_CHANGING:
            return await self.app(scope, receive, send)
        limit = self.settings.upload_limit + UPLOAD_SLACK if path == UPLOAD_PATH else self.settings.body_limit
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await refuse(send, 400, "Content-Length is not a number")
            if int(declared) > limit:
                return await refuse(send, 413, self._too_large(path))
        if path == UPLOAD_PATH:  # streamed to disk by its route, which counts the bytes as they come
            return await self.app(scope, receive, send)
        body, more = [], True
        size = 0
        while more:  # chunked bodies too: read up to the limit, then hand the body on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await refuse(send, 413, self._too_large(path))
            body.append(chunk)
            more = message.get("more_body", False)
        whole = b"".join(body)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, path: str) -> str:
        if path == UPLOAD_PATH:
            return upload_too_large(self.settings)
        return f"a request body may have at most {self.settings.body_limit // 1024} KiB"

    def _authorized(self, headers: dict, scope, method: str) -> bool:
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token):
            return True
        if method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            for value in query.get("access_token", []):
                if hmac.compare_digest(value.encode(), self.token):
                    return True
        return False

    def _origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/")
        if origin in self.cors:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


async def refuse(send, status: int, detail: str, headers: list | None = None):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
