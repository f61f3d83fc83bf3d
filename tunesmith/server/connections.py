"""uvicorn's h11 connection with the two limits it lacks:

- a deadline for the request head: uvicorn times out idle kept-open connections only, so a client that
  connects and sends nothing, or sends its head a byte at a time, holds a connection for ever;
- a cap on open connections answered with our one-line JSON 503 (uvicorn's limit_concurrency answers
  text/plain, without Retry-After, and lets only limit - 1 connections through).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guard import refuse

RETRY_AFTER_S = 5


class Connection(H11Protocol):
    def __init__(self, *args, max_connections: int, head_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_connections, self.head_timeout_s = max_connections, head_timeout_s
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:  # this one included
            self.app = self._too_many
        self._await_head()

    def data_received(self, data: bytes):
        if self.head_timer is None and self.conn.their_state is h11.IDLE:  # a new head on a kept-open one
            self._await_head()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection is over)
            self._stop_head_timer()

    def connection_lost(self, exc):
        self._stop_head_timer()
        super().connection_lost(exc)

    def _await_head(self):
        self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self):
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self):
        """Part of a head came: say why the connection ends (408); nothing came: just close, as an idle one."""
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            body = json.dumps({"detail": f"the request head did not arrive within {self.head_timeout_s:g} s"})
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body.encode()))
        self.transport.close()

    async def _too_many(self, scope, receive, send):
        await refuse(send, 503, f"the server has its limit of {self.max_connections} connections open: try again "
                                "shortly", [(b"connection", b"close"), (b"retry-after", str(RETRY_AFTER_S).encode())])
