"""Failures to talk to a server at all, and how they are worded, for every provider.

Drivers wrap the socket-level error (refused, DNS, TLS, timeout, an errno) in their own
exceptions, several layers deep. :func:`classify_network_error` walks that chain and names the
failure; the wording helpers say each failure one way, whichever provider or stage met it.
``where`` is what was being reached: ``host:port``, or ``the BigQuery API at host:port``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

from warehouse_operator.models import Reason

MAX_CHAIN = 32  # a driver's chain is a few levels deep; this bounds a pathological one


def refused(where: str) -> str:
    return f"cannot reach {where}: connection refused"


def unresolvable(where: str) -> str:
    return f"cannot reach {where}: its name could not be resolved (DNS)"


def resolution_timed_out(where: str) -> str:
    return f"resolving the name of {where} timed out (DNS)"


def silent(where: str) -> str:
    return f"{where} did not answer in time"


def hung_up(where: str) -> str:
    return f"{where} closed the connection without answering"


def unreachable(where: str, detail: str = "") -> str:
    return f"cannot reach {where}: {detail}" if detail else f"cannot reach {where}"


def tls_failed(where: str, detail: str) -> str:
    return f"TLS with {where} failed: {detail}"


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps, breadth first: cause, context, urllib3's ``reason``,
    api-core's ``cause``, and exceptions kept in ``args`` (the Snowflake connector does)."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue and len(seen) < MAX_CHAIN:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            getattr(current, "cause", None),
            *current.args,
        ]
        queue.extend(e for e in linked if isinstance(e, BaseException))


# what OpenSSL says, somewhere in the chain -> what a person should read
_TLS_DETAILS = (
    ("certificate has expired", "the server's certificate has expired"),
    ("self-signed certificate", "the server's certificate is self-signed"),
    ("self signed certificate", "the server's certificate is self-signed"),
    ("hostname mismatch", "the server's certificate does not name this host"),
    ("doesn't match", "the server's certificate does not name this host"),
    ("unable to get local issuer certificate", "the server's certificate is not from a trusted CA"),
    ("certificate verify failed", "the server's certificate did not verify"),
    ("wrong version number", "the server did not answer TLS (is the endpoint plain http?)"),
)


def tls_detail(chain: list[BaseException]) -> str:
    texts = [str(c) for c in chain]
    low = " ".join(texts).lower()
    for needle, detail in _TLS_DETAILS:
        if needle in low:
            return detail
    ssl_texts = [str(e) for e in chain if isinstance(e, ssl.SSLError)]
    deepest = (ssl_texts or texts or [""])[-1]
    return deepest[:200] or "the TLS handshake failed"


_DNS_TEXTS = ("name or service not known", "failed to resolve", "nodename nor servname")
_TIMEOUT_NAMES = frozenset(
    {"Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "ConnectTimeoutError"}
)
_HUNG_UP_NAMES = frozenset({"RemoteDisconnected", "ProtocolError"})


def _is_tls(e: BaseException) -> bool:
    name = type(e).__name__
    return isinstance(e, ssl.SSLError) or "SSLError" in name or "Tls" in name


def classify_network_error(exc: BaseException, where: str) -> tuple[Reason, str] | None:
    """Unreachable / Timeout / TLSError when ``exc`` is a failure to talk to ``where`` at all
    (no answer of the server's own), else None for the caller to classify."""
    chain = list(exception_chain(exc))
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        return Reason.UNREACHABLE, refused(where)
    if any(
        isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain
    ) or any(s in text for s in _DNS_TEXTS):
        return Reason.UNREACHABLE, unresolvable(where)
    if any(_is_tls(e) for e in chain):
        return Reason.TLS_ERROR, tls_failed(where, tls_detail(chain))
    # after refused, DNS and TLS, and by exact class name: urllib3's NewConnectionError
    # (refused, unreachable) subclasses its ConnectTimeoutError
    if (
        any(type(e).__name__ in _TIMEOUT_NAMES or isinstance(e, TimeoutError) for e in chain)
        or "timed out" in text
    ):
        return Reason.TIMEOUT, silent(where)
    if any(
        isinstance(e, ConnectionResetError | ConnectionAbortedError | BrokenPipeError)
        or type(e).__name__ in _HUNG_UP_NAMES
        for e in chain
    ):
        return Reason.UNREACHABLE, hung_up(where)
    if any(type(e).__name__ in ("ConnectionError", "NewConnectionError") for e in chain) or any(
        isinstance(e, OSError) and e.errno is not None for e in chain
    ):
        detail = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), "")
        return Reason.UNREACHABLE, unreachable(where, detail or "")
    return None


def classify_network_text(low: str, where: str, detail: str) -> tuple[Reason, str] | None:
    """The same failures, told by a driver in words only (libpq, say, which reports connect errors as text)."""
    if "connection refused" in low:
        return Reason.UNREACHABLE, refused(where)
    if any(s in low for s in ("could not translate host name", *_DNS_TEXTS)):
        return Reason.UNREACHABLE, unresolvable(where)
    if any(
        s in low
        for s in (
            "no route to host",
            "network is unreachable",
            "host is unreachable",
            "connection reset",
            # closed before any PostgreSQL message: the same fault as a reset, a moment later
            "server closed the connection unexpectedly",
        )
    ):
        return Reason.UNREACHABLE, unreachable(where, detail)
    return None
