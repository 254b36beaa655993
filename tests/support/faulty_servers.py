"""Misbehaving servers on 127.0.0.1, for tests of how the operator copes with them.

Each server listens on 127.0.0.1 and a free port (``host`` / ``port``), serves every
connection on a background thread, counts what it accepted, and is stopped with ``stop()`` or
by leaving its ``with`` block. None of them talks to anything but the client that connected.

``ResetServer()``
    Accepts every connection and at once resets it (``SO_LINGER`` 0, so the close sends a TCP
    RST): the client sees "connection reset by peer" or an unexpected end of stream.

``StallServer()``
    Accepts every connection and never reads or sends a byte.

``TLSStallServer()``
    Speaks just enough PostgreSQL to stall a TLS handshake: declines GSSAPI encryption
    requests, answers the SSLRequest with ``S`` ("go ahead with TLS") and then goes silent
    while the client waits for the answer to its TLS ClientHello.

``GarbageServer(payload)``
    Answers every read with ``payload`` (bytes that are not PostgreSQL protocol, e.g. an HTTP
    response or random bytes), first unasked when ``greet``, and closes the connection after
    ``rounds`` answers or 0.2 s without a read.
    ``payload`` and ``rounds`` may be changed between connections.

``FilteredPort()``
    A port that drops connection attempts, as a firewall that filters it does: a listener
    whose accept queue is full and is never drained, so the kernel ignores further SYNs and
    the client's connect waits until its own timeout. No listener answers, nothing is sent.

``SwitchableProxy(target_port)``
    Forwards TCP connections to ``127.0.0.1:target_port`` while up; ``down()`` closes the
    listener and every forwarded connection (new connections are refused, as when a database
    is stopped), ``up()`` listens again on the same port.

``EchoingPostgresServer(mode)``
    A small PostgreSQL wire-protocol server that asks the client for its password in clear
    text (``AuthenticationCleartextPassword``, which libpq sends unless told otherwise) and
    then repeats it back, to prove that nothing a server says reaches the status unredacted:

    - ``mode="auth-error"``: answers the password with a FATAL ErrorResponse (SQLSTATE
      ``error_code``, message ``error_template`` with ``{user}``, ``{database}`` and
      ``{echo}`` filled in) whose message, detail and hint contain the password and the whole
      connection string (libpq's ``key=value`` form and the URL form);
    - ``mode="version"``: accepts the login and reports a ``server_version`` parameter holding
      the password, then answers ``SELECT 1`` normally;
    - ``mode="query-error"``: accepts the login and answers every query with an ERROR whose
      message holds the password.

    ``echo`` (a function of the password, the startup parameters and the port) replaces what
    is repeated. ``mode``, ``error_code``, ``error_template`` and ``echo`` may be changed
    between connections.
    ``received_passwords`` lists what clients sent; ``queries`` the SQL texts they ran.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Literal
from urllib.parse import quote

from tests.support.servers import (
    LOCALHOST,
    Managed,
    StallServer,
    TCPServer,
    reset_connection,
)

__all__ = [
    "EchoMode",
    "EchoingPostgresServer",
    "FaultServer",
    "FilteredPort",
    "GarbageServer",
    "ResetServer",
    "StallServer",
    "SwitchableProxy",
    "TLSStallServer",
    "libpq_conninfo",
]

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
IO_TIMEOUT = 10.0


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection")
        data += chunk
    return data


class FaultServer(TCPServer):
    """A listener on 127.0.0.1 whose accepted connections are handled by ``handle``.

    ``handle`` runs on its own thread per connection; connections it leaves open are closed
    by ``stop()``. A client that breaks the protocol ends its connection quietly.
    """

    io_timeout = IO_TIMEOUT
    quiet_errors = (OSError, struct.error)


class ResetServer(FaultServer):
    def handle(self, conn: socket.socket) -> None:
        reset_connection(conn)


def _read_startup_packet(conn: socket.socket) -> tuple[int, bytes]:
    """One untyped startup-phase packet: (code, rest)."""
    (length,) = struct.unpack("!i", _recv_exact(conn, 4))
    if not 8 <= length <= 10_000:
        raise ConnectionError("not a PostgreSQL startup packet")
    body = _recv_exact(conn, length - 4)
    (code,) = struct.unpack("!i", body[:4])
    return code, body[4:]


def _negotiate(conn: socket.socket, answer_ssl: bytes) -> tuple[int, bytes] | None:
    """Answer encryption requests until the StartupMessage (returned) or an SSLRequest 'S'."""
    while True:
        code, rest = _read_startup_packet(conn)
        if code == GSSENC_REQUEST:
            conn.sendall(b"N")
        elif code == SSL_REQUEST:
            conn.sendall(answer_ssl)
            if answer_ssl == b"S":
                return None
        elif code == CANCEL_REQUEST:
            raise ConnectionError("cancel request")
        else:
            return code, rest


class TLSStallServer(FaultServer):
    def handle(self, conn: socket.socket) -> None:
        if _negotiate(conn, b"S") is None:
            self.hold(conn)  # the ClientHello is never answered
        else:
            reset_connection(
                conn
            )  # a client that did not ask for TLS is not what this server tests


class GarbageServer(FaultServer):
    def __init__(self, payload: bytes, *, rounds: int = 1, greet: bool = False) -> None:
        if not payload:
            raise ValueError("payload must not be empty")
        self.payload = payload
        self.rounds = rounds
        self.greet = greet
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        # a client still waiting after the last answer gets the end of the stream soon after
        conn.settimeout(0.2)
        try:
            if self.greet:
                conn.sendall(self.payload)
            for _ in range(self.rounds):
                if not conn.recv(65536):
                    break
                conn.sendall(self.payload)
        finally:
            conn.close()


class FilteredPort(Managed):
    """A port whose connection attempts go unanswered (see the module docstring)."""

    host = LOCALHOST

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        # fill the accept queue (Linux queues backlog + 1); later SYNs are dropped
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(0.2)
            try:
                filler.connect((LOCALHOST, self.port))
            except OSError:
                filler.close()
                break
            self._fillers.append(filler)
        if not self._fillers:
            self.stop()
            raise OSError("could not fill the accept queue of a listener on 127.0.0.1")

    def stop(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers = []
        self._listener.close()


class _Forwarder(TCPServer):
    """One listening period of a ``SwitchableProxy``: forwards, and cuts everything on stop."""

    io_timeout = None  # a forwarded connection may be idle for as long as its client likes

    def __init__(self, proxy: SwitchableProxy, port: int) -> None:
        self._proxy = proxy
        super().__init__(port)

    def handle(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(
                (LOCALHOST, self._proxy.target_port), timeout=IO_TIMEOUT
            )
        except OSError:
            reset_connection(conn)
            return
        upstream.settimeout(None)
        self.track(upstream)
        self._proxy.forwarded()
        threading.Thread(
            target=self._pump, args=(upstream, conn), name="proxy-pump", daemon=True
        ).start()
        self._pump(conn, upstream)

    def drop(self, conn: socket.socket) -> None:
        reset_connection(conn)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class SwitchableProxy(Managed):
    """TCP forwarding to 127.0.0.1:``target_port`` that can be taken down and brought back."""

    host = LOCALHOST

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._lock = threading.Lock()
        self._forwarder: _Forwarder | None = None
        self.port = 0
        self.connections_forwarded = 0
        self.up()

    @property
    def is_up(self) -> bool:
        return self._forwarder is not None

    def up(self) -> None:
        if self._forwarder is None:
            self._forwarder = _Forwarder(self, self.port)
            self.port = self._forwarder.port

    def down(self) -> None:
        """Refuse new connections and cut the forwarded ones."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.stop()

    def stop(self) -> None:
        self.down()

    def forwarded(self) -> None:
        with self._lock:
            self.connections_forwarded += 1


# --- a PostgreSQL-speaking server that repeats the password --------------------------------------

EchoMode = Literal["auth-error", "version", "query-error"]


def libpq_conninfo(params: dict[str, str]) -> str:
    """``key=value`` connection string with libpq's quoting (single quotes, backslash escapes)."""

    def q(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(v)}" for k, v in params.items())


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _cstr(text: str) -> bytes:
    # a C string cannot hold NUL: a value with one is cut there, as a real server would
    return text.encode("utf-8", errors="replace").split(b"\x00", 1)[0] + b"\x00"


def _error(severity: str, code: str, message: str, detail: str = "", hint: str = "") -> bytes:
    fields = b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(code)
    fields += b"M" + _cstr(message)
    if detail:
        fields += b"D" + _cstr(detail)
    if hint:
        fields += b"H" + _cstr(hint)
    return _message(b"E", fields + b"\x00")


def _parameter(name: str, value: str) -> bytes:
    return _message(b"S", _cstr(name) + _cstr(value))


_READY = _message(b"Z", b"I")
_ROW_DESCRIPTION = _message(
    b"T",
    struct.pack("!h", 1) + _cstr("?column?") + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0),
)
_DATA_ROW_ONE = _message(b"D", struct.pack("!hi", 1, 1) + b"1")


class EchoingPostgresServer(FaultServer):
    def __init__(
        self,
        mode: EchoMode,
        *,
        error_code: str = "28000",
        error_template: str = 'login rejected for user "{user}": {echo}',
        echo: Callable[[str, dict[str, str], int], str] | None = None,
    ) -> None:
        self.mode: EchoMode = mode
        self.error_code = error_code
        self.error_template = error_template
        self.echo = echo
        self.received_passwords: list[str] = []
        self.queries: list[str] = []
        super().__init__()

    def echo_text(self, password: str, startup: dict[str, str]) -> str:
        """What the server repeats back: the password and the whole connection string."""
        if self.echo is not None:
            return self.echo(password, startup, self.port)
        params = {
            "host": LOCALHOST,
            "port": str(self.port),
            "user": startup.get("user", ""),
            "password": password,
            "dbname": startup.get("database", ""),
        }
        url = (
            f"postgresql://{quote(params['user'], safe='')}:{quote(password, safe='')}"
            f"@{LOCALHOST}:{self.port}/{quote(params['dbname'], safe='')}"
        )
        return f"{password} (sent as {libpq_conninfo(params)}; {url})"

    def handle(self, conn: socket.socket) -> None:
        started = _negotiate(conn, b"N")
        if started is None:
            return
        _code, rest = started
        items = rest.split(b"\x00")
        startup = {
            items[i].decode(errors="replace"): items[i + 1].decode(errors="replace")
            for i in range(0, len(items) - 1, 2)
            if items[i]
        }
        conn.sendall(_message(b"R", struct.pack("!i", 3)))  # AuthenticationCleartextPassword
        kind, payload = self._read_message(conn)
        if kind != b"p":
            return
        password = payload.rstrip(b"\x00").decode("utf-8", errors="replace")
        with self._lock:
            self.received_passwords.append(password)
        echo = self.echo_text(password, startup)
        if self.mode == "auth-error":
            conn.sendall(
                _error(
                    "FATAL",
                    self.error_code,
                    self.error_template.format(
                        user=startup.get("user", ""),
                        database=startup.get("database", ""),
                        echo=echo,
                    ),
                    detail=f"the client sent {echo}",
                    hint=f"check {echo}",
                )
            )
            return
        # a server_version starting with the password: the provider keeps its first word
        version = f"{echo} 16.4" if self.mode == "version" else "16.4"
        conn.sendall(
            _message(b"R", struct.pack("!i", 0))
            + _parameter("server_version", version)
            + _parameter("server_encoding", "UTF8")
            + _parameter("client_encoding", "UTF8")
            + _parameter("DateStyle", "ISO, MDY")
            + _parameter("integer_datetimes", "on")
            + _parameter("standard_conforming_strings", "on")
            + _message(b"K", struct.pack("!ii", 4242, 4242))
            + _READY
        )
        self._serve_queries(conn, echo)

    def _serve_queries(self, conn: socket.socket, echo: str) -> None:
        failed = False  # in the extended protocol, an error skips messages until Sync
        while True:
            kind, payload = self._read_message(conn)
            if kind == b"X":
                return
            if kind == b"Q":  # simple query
                self._record(payload.rstrip(b"\x00"))
                if self.mode == "query-error":
                    conn.sendall(self._query_error(echo) + _READY)
                else:
                    conn.sendall(
                        _ROW_DESCRIPTION
                        + _DATA_ROW_ONE
                        + _message(b"C", _cstr("SELECT 1"))
                        + _READY
                    )
            elif kind == b"S":  # Sync
                failed = False
                conn.sendall(_READY)
            elif failed:
                continue
            elif kind == b"P":  # Parse: name, query, parameter types
                parts = payload.split(b"\x00", 2)
                self._record(parts[1] if len(parts) > 1 else b"")
                if self.mode == "query-error":
                    conn.sendall(self._query_error(echo))
                    failed = True
                else:
                    conn.sendall(_message(b"1", b""))
            elif kind == b"B":
                conn.sendall(_message(b"2", b""))
            elif kind == b"D":
                if payload[:1] == b"S":
                    conn.sendall(_message(b"t", struct.pack("!h", 0)))
                conn.sendall(_ROW_DESCRIPTION)
            elif kind == b"E":
                conn.sendall(_DATA_ROW_ONE + _message(b"C", _cstr("SELECT 1")))
            elif kind == b"C":
                conn.sendall(_message(b"3", b""))
            # Flush ('H') needs no answer: everything is sent at once

    def _record(self, sql: bytes) -> None:
        with self._lock:
            self.queries.append(sql.decode("utf-8", errors="replace"))

    @staticmethod
    def _query_error(echo: str) -> bytes:
        return _error("ERROR", "XX000", f"query failed: {echo}", detail=echo)

    @staticmethod
    def _read_message(conn: socket.socket) -> tuple[bytes, bytes]:
        kind = _recv_exact(conn, 1)
        (length,) = struct.unpack("!i", _recv_exact(conn, 4))
        if not 4 <= length <= 1_000_000:
            raise ConnectionError("bad message length")
        return kind, _recv_exact(conn, length - 4)
