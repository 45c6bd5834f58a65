"""A TCP proxy in front of the S3 server that answers the first N connections with an HTTP 503 (or
resets them), then forwards: real transient faults on the wire, for the retry tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlparse

INTERNAL = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: 95\r\n"
    b"Connection: close\r\n\r\n"
    b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>We broke</Message></Error>\r\n\r\n\r\n"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 93\r\nConnection: close\r\n\r\n"
    b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Please reduce</Message></Error>\r\n"
)


class FaultyProxy:
    def __init__(self, upstream: str, failures: int, mode: str = "503"):
        target = urlparse(upstream)
        self.upstream = (target.hostname, target.port)
        self.failures, self.mode = failures, mode
        self.seen = 0
        self.burst_until = 0.0  # while time.monotonic() is below this, every connection fails:
        self.burst_mode = "500"  # with an HTTP 500, or "reset": the server is down (connection reset)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.seen += 1
            fail = self.seen <= self.failures
            burst = time.monotonic() < self.burst_until
        if burst and self.burst_mode == "500":
            conn.recv(65536)
            conn.sendall(INTERNAL)
            conn.close()
            return
        if fail or burst:
            conn.recv(65536)
            if fail and self.mode == "503":
                conn.sendall(SLOW_DOWN)
            else:  # reset
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()
            return
        up = socket.create_connection(self.upstream)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
        pipe(conn, up)

    def burst(self, seconds: float, mode: str = "500") -> None:
        """From now on, for `seconds`, answer every request with HTTP 500 (or reset it: "reset")."""
        self.burst_mode = mode
        self.burst_until = time.monotonic() + seconds

    def close(self) -> None:
        self.server.close()
