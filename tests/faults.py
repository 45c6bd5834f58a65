"""Proxies of our own in front of the S3 server, for real faults on the wire: FaultyProxy answers the first N
connections with an HTTP 503 (or resets them), then forwards; TamperingProxy spoils chosen answers."""

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


class _Proxy:
    """A TCP server on a free port of 127.0.0.1 in front of `upstream`, a thread per connection (`_handle`)."""

    def __init__(self, upstream: str):
        target = urlparse(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()


class FaultyProxy(_Proxy):
    def __init__(self, upstream: str, failures: int, mode: str = "503"):
        self.failures, self.mode = failures, mode
        self.seen = 0
        self.burst_until = 0.0  # while time.monotonic() is below this, every connection fails:
        self.burst_mode = "500"  # with an HTTP 500, or "reset": the server is down (connection reset)
        super().__init__(upstream)

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


class TamperingProxy(_Proxy):
    """An HTTP proxy in front of the S3 server that reads each request and its answer whole (one request per
    connection) and can spoil the answers to GETs that match `target` (a substring of the request line):
    `short` (a well-formed answer with half the bytes), `cut` (half the body, then the connection drops),
    `stall` (half the body, then silence), `corrupt` (a flipped byte) or `garble` (the body replaced by junk).
    `spoil(mode, times)` spoils the next `times` matching answers (-1: all of them)."""

    def __init__(self, upstream: str, target: str = "Range: bytes="):
        self.target, self.mode, self.left, self.spoiled = target, "", 0, 0
        self._closed = threading.Event()
        super().__init__(upstream)

    def spoil(self, mode: str, times: int = -1, target: str | None = None) -> None:
        with self._lock:
            self.mode, self.left, self.target = mode, times, target or self.target

    @staticmethod
    def _read_message(sock: socket.socket, has_body: bool = True, to_eof: bool = False) -> tuple[bytes, bytes]:
        """A request (`to_eof` False: a body only with a Content-Length) or an answer (read to its end)."""
        data = b""
        while b"\r\n\r\n" not in data:
            if not (got := sock.recv(65536)):
                return data, b""
            data += got
        head, _, body = data.partition(b"\r\n\r\n")
        if not to_eof and b"expect: 100-continue" in head.lower():
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client sends its body once told to
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        while has_body and (len(body) < length if length is not None else to_eof):
            if not (got := sock.recv(65536)):
                break
            body += got
        return head, body

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            head, body = self._read_message(conn)
            if not head:
                return
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"connection:", b"expect:"))]
            with socket.create_connection(self.upstream) as up:
                up.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
                answer_head, answer = self._read_message(up, not head.startswith(b"HEAD "), to_eof=True)
            with self._lock:
                spoil = self.left != 0 and head.startswith(b"GET ") and self.target.encode() in head
                mode = self.mode if spoil else ""
                if spoil:
                    self.left -= 1
                    self.spoiled += 1
            status, *fields = answer_head.split(b"\r\n")
            fields = [f for f in fields if not f.lower().startswith(b"connection:")] + [b"Connection: close"]
            if mode == "short":
                answer = answer[: len(answer) // 2]
                fields = [f for f in fields if not f.lower().startswith(b"content-length:")]
                fields.append(b"Content-Length: %d" % len(answer))
            elif mode == "corrupt" and answer:
                answer = bytes([answer[0] ^ 0xFF]) + answer[1:]
            elif mode == "garble":
                answer = (b"\x00garbled" * (len(answer) // 8 + 1))[: len(answer)]
            out = b"\r\n".join([status, *fields]) + b"\r\n\r\n"
            if mode in ("cut", "stall"):
                conn.sendall(out + answer[: len(answer) // 2])
                if mode == "stall":
                    self._closed.wait(600)
                return
            conn.sendall(out + answer)

    def close(self) -> None:
        self._closed.set()
        super().close()
