"""The connection layer, against a real server: no Nagle delay, a 500 that closes its connection cleanly,
a deadline for the request head, and a cap on open connections."""

from __future__ import annotations

import http.client
import json
import socket
import time

from .conftest import wait_for

GENEROUS_S = 20  # only keeps a broken test from hanging: nothing here is timed against it


def connect(server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=GENEROUS_S)


def get(conn: http.client.HTTPConnection, path: str):
    conn.request("GET", path)
    res = conn.getresponse()
    return res, json.loads(res.read())


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket.timeout if it never does)."""
    sock.settimeout(GENEROUS_S)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def open_connections(server) -> list:
    return list(server.server.server_state.connections)


def test_accepted_connections_send_without_nagle_delay(start_server):
    """asyncio sets TCP_NODELAY only on sockets made with IPPROTO_TCP; without it a polling client's second
    request on a kept-open connection waits 40 ms for the delayed ACK."""
    server = start_server()
    conn = connect(server)
    for _ in range(2):
        res, _ = get(conn, "/api/health")
        assert res.status == 200
    (served,) = open_connections(server)
    assert served.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    conn.close()


def test_a_500_says_connection_close_and_the_client_goes_on(start_server, monkeypatch):
    server = start_server()
    store = server.app.state.store

    def broken(limit):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(store, "recent", broken)
    conn = connect(server)
    res, body = get(conn, "/api/jobs")
    assert res.status == 500 and res.getheader("connection") == "close"
    assert body == {"detail": "internal error: RuntimeError (the server log has the details)"}
    monkeypatch.undo()
    res, body = get(conn, "/api/jobs")  # the same client object: it reconnects, as it was told to
    assert res.status == 200 and body == []
    conn.close()


def test_a_request_head_that_never_ends_is_answered_408_and_closed(start_server):
    server = start_server(head_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": "the request head did not arrive within 0.5 s"}


def test_a_silent_connection_and_a_slow_second_head_are_closed(start_server):
    server = start_server(head_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as sock:
        assert read_until_closed(sock) == b""  # connected, never sent a byte
    conn = connect(server)
    res, _ = get(conn, "/api/health")
    assert res.status == 200
    conn.sock.sendall(b"GET /api/health HTTP/1.1\r\nHo")  # the next head on the kept-open connection stalls
    assert read_until_closed(conn.sock).startswith(b"HTTP/1.1 408 ")
    conn.close()


def test_an_answer_slower_than_the_head_timeout_is_not_cut(start_server, monkeypatch):
    server = start_server(head_timeout_s=0.3)
    store = server.app.state.store
    recent = store.recent

    def slow(limit):
        time.sleep(1.0)  # the head has arrived: only its reading has a deadline, not the answer
        return recent(limit)

    monkeypatch.setattr(store, "recent", slow)
    conn = connect(server)
    res, body = get(conn, "/api/jobs")
    assert res.status == 200 and body == []
    conn.close()


def test_connections_past_the_cap_are_answered_503(start_server):
    server = start_server(max_connections=2)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) for _ in range(2)]
    wait_for(lambda: len(open_connections(server)) == 2, "the server to accept both")
    conn = connect(server)
    res, body = get(conn, "/api/health")
    assert res.status == 503 and res.getheader("connection") == "close" and res.getheader("retry-after") == "5"
    assert body == {"detail": "the server has its limit of 2 connections open: try again shortly"}
    conn.close()
    idle[0].close()
    wait_for(lambda: len(open_connections(server)) < 2, "the server to see one close")
    res, _ = get(conn, "/api/health")
    assert res.status == 200
    conn.close()
    idle[1].close()



def test_request_heads_up_to_the_limit_pass_and_longer_ones_are_refused(start_server):
    """h11 measures a head while it is incomplete: each is sent in two parts, the end held back."""
    server = start_server(max_head_bytes=24 * 1024)  # h11's own default is 16 KiB: the setting is what holds
    start = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: "
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as sock:
        sock.sendall(start + b"a" * 20_000)
        sock.sendall(b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as sock:
        sock.sendall(start + b"a" * 30_000)  # no end: the server answers once it holds more than the limit
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
