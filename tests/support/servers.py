"""Building blocks of the peers the tests run on 127.0.0.1: ports, processes, small servers.

``free_port()``
    A port of 127.0.0.1 nothing listens on right now (connecting is refused).
``wait_for_port(port, timeout, process=...)``
    Whether something accepts connections on the port within ``timeout`` seconds (early
    ``False`` when ``process`` exits first).
``stop_process(process, timeout)`` / ``kill_process(process)``
    SIGTERM, then SIGKILL when it has not exited within ``timeout`` seconds / SIGKILL at once.
``die_with_parent``
    A ``preexec_fn`` that ties a child's life to the test process.
``Managed``
    ``with`` support for anything with ``start()`` and ``stop()``.
``TCPServer``
    A listener whose accepted connections ``handle(conn)`` serves, one thread each.
``StallServer()``
    Accepts every connection and never reads or sends a byte: every protocol then waits for an
    answer that never comes (for Timeout tests).
``BackgroundHTTPServer(handler)`` / ``QuietHandler``
    A ``ThreadingHTTPServer`` on a free port, served from a daemon thread; a request handler
    that logs nothing (request lines and headers may carry credentials).
"""

from __future__ import annotations

import contextlib
import json
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.support.waiting import poll_until

__all__ = [
    "LOCALHOST",
    "BackgroundHTTPServer",
    "Managed",
    "QuietHandler",
    "StallServer",
    "TCPServer",
    "accepts_connections",
    "die_with_parent",
    "free_port",
    "kill_process",
    "listen",
    "reset_connection",
    "stop_process",
    "wait_for_port",
]

LOCALHOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


# --- ports -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def listen(port: int = 0, backlog: int = 128) -> socket.socket:
    """A non-blocking listener on 127.0.0.1 (``port`` 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def reset_connection(conn: socket.socket) -> None:
    """Close with a TCP RST instead of the orderly FIN."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def accepts_connections(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    timeout: float,
    *,
    host: str = LOCALHOST,
    process: subprocess.Popen[Any] | None = None,
) -> bool:
    """Whether ``host:port`` accepts a connection within ``timeout`` seconds; ``False`` as soon
    as ``process`` (the server, when given) has exited."""
    exited = (lambda: process.poll() is not None) if process is not None else None
    return bool(
        poll_until(lambda: accepts_connections(port, host, 0.5), timeout, 0.05, give_up=exited)
    )


# --- processes ---------------------------------------------------------------------------------


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the test process dies, so that a killed test
    run leaves no server or operator behind (Linux; elsewhere nothing happens). The signal
    comes when the *thread* that started the child ends: start children from the main thread."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> bool:
    """SIGTERM and wait; SIGKILL when it has not exited within ``timeout`` seconds.
    Whether it had to be killed."""
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process(process)
        return True
    return False


def kill_process(process: subprocess.Popen[Any]) -> None:
    """SIGKILL (a crash: no cleanup) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


# --- servers -----------------------------------------------------------------------------------


class Managed:
    """``with`` support: entering starts (``start()`` returns the object), leaving closes."""

    def start(self) -> Self:
        return self

    def stop(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TCPServer(Managed):
    """A listener on 127.0.0.1 whose accepted connections are served by ``handle``.

    ``handle`` runs on a thread of its own per connection; errors of the types in
    ``quiet_errors`` end it silently. Connections still open are closed by ``stop()``.
    """

    host = LOCALHOST
    io_timeout: float | None = 10.0
    quiet_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, port: int = 0) -> None:
        self._listener = listen(port)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._accepted = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"{type(self).__name__}-accept", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._accepted

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def hold(self, conn: socket.socket) -> None:
        """Keep a connection open and silent until the server stops."""
        self._stopping.wait()

    def track(self, conn: socket.socket) -> None:
        """Have ``stop()`` close ``conn`` too."""
        with self._lock:
            self._open.append(conn)

    def accepted(self, conn: socket.socket) -> None:
        """What becomes of a new connection: by default, ``handle`` on a thread of its own."""
        threading.Thread(
            target=self._handle_quietly,
            args=(conn,),
            name=f"{type(self).__name__}-conn",
            daemon=True,
        ).start()

    def drop(self, conn: socket.socket) -> None:
        """How ``stop()`` ends a connection still open."""
        with contextlib.suppress(OSError):
            conn.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for _key, _events in selector.select(timeout=0.05):
                    try:
                        conn, _addr = self._listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    conn.settimeout(self.io_timeout)
                    with self._lock:
                        self._accepted += 1
                        self._open.append(conn)
                    self.accepted(conn)

    def _handle_quietly(self, conn: socket.socket) -> None:
        with contextlib.suppress(*self.quiet_errors):
            self.handle(conn)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            self.drop(conn)
        self._listener.close()


class StallServer(TCPServer):
    """Accepts TCP connections and never answers; ``stop()`` closes them all."""

    def accepted(self, conn: socket.socket) -> None:
        """Keep it open (``stop()`` closes it), read nothing, say nothing: no thread needed."""


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, no access log (request lines and headers may carry tokens), JSON helpers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_payload(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_payload(status, payload, "application/json; charset=UTF-8", headers)


class BackgroundHTTPServer(Managed):
    """A ThreadingHTTPServer on 127.0.0.1 and a free port, served from a daemon thread after
    ``start()``. Handlers reach this object as ``self.server.owner``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer((LOCALHOST, 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> Self:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever for a loop that never ran
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()
