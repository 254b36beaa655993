"""Snowflake: the real ``snowflake-connector-python``, a login that validates the session's
defaults, metadata-only queries, close.

The test costs the user nothing: it never runs anything that needs compute, so a suspended
warehouse stays suspended. The login asks Snowflake to validate the role, database, schema and
warehouse (``validate_default_parameters``: the service answers 390189 / 390201 at login), the
warehouse's state comes from ``SHOW WAREHOUSES LIKE`` (metadata), and the server version from
``SELECT CURRENT_VERSION()``, which the cloud services layer answers without a warehouse.
A suspended warehouse is healthy: it resumes on demand when real work comes.

The connector is blocking. It runs on a small dedicated thread pool (never the event loop),
with its login, network and socket timeouts taken from the test's budget. A login against an
endpoint that accepts connections and then says nothing cannot always be interrupted, so the
pool is bounded: calls whose test already timed out are counted, and when every thread is
held by such a call, a new test fails at once instead of queueing behind them.

The connector is imported inside the probe: operators without Snowflake connections do not
pay its import time and memory.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from warehouse_operator.models import ConnectionSpec, Reason, SnowflakeSpec
from warehouse_operator.providers.base import (
    Destination,
    ProbeFailure,
    ProbeSuccess,
    Resolved,
    Stages,
)
from warehouse_operator.secrets import CredentialError, SecretData

QUERY_TAG = "warehouse-operator connection test"
DEFAULT_DOMAIN = "snowflakecomputing.com"
WORKER_THREADS = 16

# Snowflake's own error codes (login-time codes come from the service, 25xxxx from the connector)
INCORRECT_USERNAME_OR_PASSWORD = 390100
INVALID_JWT = 390144
ROLE_NOT_GRANTED = 390189
OBJECT_NOT_FOUND_AT_LOGIN = 390201
IP_NOT_ALLOWED = 390422
SQL_OBJECT_NOT_FOUND = 2003
SQL_INSUFFICIENT_PRIVILEGES = 3001

T = TypeVar("T")


# --- credentials ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SnowflakeCredentials:
    """What the connector needs to log in. ``private_key_der`` is unencrypted PKCS#8 DER."""

    username: str
    password: str | None = None
    private_key_der: bytes | None = None
    public_key_fingerprint: str | None = None

    @property
    def auth_method(self) -> str:
        return "keyPair" if self.private_key_der is not None else "password"

    def __repr__(self) -> str:  # never show a password or key, even in a debugger or traceback
        secret = "private_key=***" if self.private_key_der is not None else "password=***"
        return (
            f"SnowflakeCredentials(username={self.username!r}, {secret}, "
            f"public_key_fingerprint={self.public_key_fingerprint!r})"
        )


def public_key_fingerprint(private_key: Any) -> str:
    """``SHA256:`` + base64 of the SHA-256 of the DER SubjectPublicKeyInfo.

    This is what Snowflake shows as ``RSA_PUBLIC_KEY_FP`` in ``DESCRIBE USER``.
    """
    from cryptography.hazmat.primitives import serialization

    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


# PBKDF2 iterations, or scrypt N*r*p. cryptography holds the GIL while it derives, so this is
# also how long one test of such a key may stall the event loop: about 0.03 s at the cap
# (100 times OpenSSL's default of 2,048 iterations); a parsed key is kept per Secret version.
MAX_KDF_COST = 200_000
_SCRYPT_OID = bytes.fromhex("2b06010401da47040b")


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) items of a DER sequence's content."""
    items, i = [], 0
    while i < len(data):
        tag, size = data[i], data[i + 1]
        i += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(data[i : i + count], "big")
            i += count
        items.append((tag, data[i : i + size]))
        i += size
    return items


def _pkcs8_kdf_cost(pem: bytes) -> int | None:
    """The work factor of an encrypted PKCS#8 key's key derivation, read without decrypting.

    PBES2/PBKDF2 and PKCS#12 PBE: the iteration count; scrypt: N*r*p. None if unreadable.
    """
    try:
        body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
        (outer,) = [v for t, v in _der_items(base64.b64decode(body)) if t == 0x30]
        algorithm = _der_items(outer)[0][1]  # AlgorithmIdentifier of the encryption
        return _cost_in(algorithm)
    except (ValueError, IndexError, TypeError):
        return None


def _cost_in(node: bytes) -> int | None:
    items = _der_items(node)
    for index, (tag, value) in enumerate(items):
        if tag == 0x06 and value == _SCRYPT_OID:
            params = [
                int.from_bytes(v, "big") for t, v in _der_items(items[index + 1][1]) if t == 0x02
            ]
            return params[0] * params[1] * params[2]
    ints = [int.from_bytes(v, "big") for t, v in items if t == 0x02]
    if ints and any(t == 0x04 for t, _ in items):  # (salt, iterations, ...)
        return ints[0]
    for tag, value in items:
        if tag == 0x30:
            found = _cost_in(value)
            if found is not None:
                return found
    return None


def load_private_key(pem: bytes, passphrase: bytes | None, secret_name: str) -> tuple[bytes, str]:
    """The key, loaded once per (key, passphrase): decrypting one costs its key derivation."""
    return _load_private_key(pem, passphrase, secret_name)


@functools.lru_cache(maxsize=256)
def _load_private_key(pem: bytes, passphrase: bytes | None, secret_name: str) -> tuple[bytes, str]:
    """A PEM private key (PKCS#8 or PKCS#1, plain or encrypted) -> (PKCS#8 DER, fingerprint).

    The connector wants DER bytes or a key object, not PEM. Raises CredentialError with a
    message that names the Secret's keys, never their values.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    where = f"Secret {secret_name!r}"
    text = pem.strip()
    if b"-----BEGIN" not in text or b"PRIVATE KEY-----" not in text:
        raise CredentialError(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is not a PEM private key "
            "(expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        )
    # PKCS#8 and OpenSSL's PKCS#1 encryption both say so in the armour; a passphrase given
    # for a plain key is ignored rather than refused
    encrypted = b"BEGIN ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text
    if b"BEGIN ENCRYPTED PRIVATE KEY" in text and passphrase is not None:
        cost = _pkcs8_kdf_cost(text)
        if cost is None or cost > MAX_KDF_COST:
            # decrypting runs the key derivation the key's owner chose: bound it before
            # one tenant's key can keep a worker busy for minutes
            raise CredentialError(
                Reason.INVALID_CREDENTIALS,
                f"key 'private_key' of {where} uses a key derivation that is unreadable or "
                f"too costly (more than {MAX_KDF_COST:,} iterations); re-encrypt it with "
                "openssl pkcs8 -topk8 -v2 aes256",
            )
    try:
        key = serialization.load_pem_private_key(text, password=passphrase if encrypted else None)
    except TypeError:
        # with the password chosen above, only an encrypted key without a passphrase is left
        raise CredentialError(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is encrypted, but the Secret has no "
            "'private_key_passphrase'",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted and passphrase is not None:
            message = (
                f"key 'private_key' of {where} could not be decrypted with "
                "'private_key_passphrase' (wrong passphrase, or a damaged key)"
            )
        else:
            message = (
                f"key 'private_key' of {where} is not a valid PEM private key (PKCS#8 or PKCS#1)"
            )
        raise CredentialError(Reason.INVALID_CREDENTIALS, message) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialError(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is a {type(key).__name__.removeprefix('_')}; "
            "Snowflake key-pair authentication needs an RSA key",
        )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der, public_key_fingerprint(key)


# --- where to connect ------------------------------------------------------------------------


@dataclass(frozen=True)
class SnowflakeTarget:
    host: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def target_of(sf: SnowflakeSpec) -> SnowflakeTarget:
    """``spec.snowflake.endpoint`` when set, else ``https://<account>.snowflakecomputing.com``.

    Only the endpoint's scheme, host and port are used: the connector has no path prefix.
    """
    if sf.endpoint:
        parts = urlsplit(sf.endpoint)
        protocol = parts.scheme.lower()
        default_port = 443 if protocol == "https" else 80
        return SnowflakeTarget(parts.hostname or "", parts.port or default_port, protocol)
    return SnowflakeTarget(f"{sf.account.lower()}.{DEFAULT_DOMAIN}", 443, "https")


def identifier(name: str) -> str:
    """The name Snowflake stores for an identifier: unquoted ones are upper-cased."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.upper()


def connect_params(
    sf: SnowflakeSpec,
    credentials: SnowflakeCredentials,
    target: SnowflakeTarget,
    budget: float,
) -> dict[str, Any]:
    """Keyword arguments for ``snowflake.connector.connect`` (pure; the key is added later)."""
    seconds = max(1, math.ceil(budget))
    params: dict[str, Any] = {
        "account": sf.account,
        "user": credentials.username,
        "host": target.host,
        "port": target.port,
        "protocol": target.protocol,
        # Snowflake checks the role, database, schema and warehouse at login, by metadata
        "validate_default_parameters": True,
        "login_timeout": seconds,
        "network_timeout": seconds,
        "socket_timeout": seconds,
        "client_session_keep_alive": False,
        "session_parameters": {"QUERY_TAG": QUERY_TAG},
    }
    if credentials.password is not None:
        params["password"] = credentials.password
    else:
        params["authenticator"] = "SNOWFLAKE_JWT"
    if sf.role:
        params["role"] = sf.role
    if sf.warehouse:
        params["warehouse"] = sf.warehouse
    if sf.database:
        params["database"] = sf.database
        params["schema"] = sf.schema_
    return params


# --- error classification ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoginContext:
    """What a classified message may name (never a secret)."""

    user: str
    target: SnowflakeTarget
    role: str | None = None
    database: str | None = None
    schema: str | None = None
    warehouse: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Classified:
    reason: Reason
    message: str
    stage: str  # the stage that failed: authenticate, role, database, warehouse, query


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _server_text(exc: BaseException) -> str:
    """The service's words, without the connector's "Failed to connect to DB: host:port." prefix."""
    # raw_msg: the connector's msg is prefixed with "<errno> (<sqlstate>): "
    text = str(getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or exc)
    text = re.sub(r"^Failed to connect to DB(: [^\s]+)?\.\s*", "", text)
    return " ".join(text.split()) or type(exc).__name__


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from, including causes the connector keeps in args."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__, *current.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


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


def _tls_detail(exc: BaseException) -> str:
    texts = [str(c) for c in exception_chain(exc)]
    low = " ".join(texts).lower()
    for needle, detail in _TLS_DETAILS:
        if needle in low:
            return detail
    deepest = texts[-1] if texts else ""
    return deepest[:200] or "the TLS handshake failed"


def _network_cause(exc: BaseException, where: str) -> tuple[Reason, str] | None:
    """Unreachable / Timeout / TLSError from the socket-level error under the connector's."""
    for cause in exception_chain(exc):
        name = type(cause).__name__
        if isinstance(cause, ssl.SSLError) or "Tls" in name or "SSLError" in name:
            return Reason.TLS_ERROR, f"TLS with {where} failed: {_tls_detail(exc)}"
        if isinstance(cause, socket.gaierror):
            return Reason.UNREACHABLE, f"cannot resolve the host of {where} (DNS)"
        if isinstance(cause, ConnectionRefusedError):
            return Reason.UNREACHABLE, f"cannot reach {where}: connection refused"
        if isinstance(cause, TimeoutError) or name in ("ReadTimeout", "ConnectTimeout"):
            return Reason.TIMEOUT, f"{where} did not answer in time"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return Reason.UNREACHABLE, f"cannot reach {where}: {cause.strerror}"
    return None


def classify_error(exc: BaseException, ctx: LoginContext, *, during: str) -> Classified:
    """Map a connector error to a reason, a message and the stage that failed (pure).

    ``during`` is the stage that was running: ``authenticate`` for the login, else the query's.
    Codes decide first: the service sends them for everything it refuses at login.
    """
    code = _errno(exc)
    text = _server_text(exc)
    user = repr(ctx.user)
    if code == INCORRECT_USERNAME_OR_PASSWORD:
        return Classified(
            Reason.AUTHENTICATION_FAILED,
            f"Snowflake rejected user {user}: incorrect username or password (390100)",
            "authenticate",
        )
    if code == INVALID_JWT:
        hint = (
            f"; the user's RSA_PUBLIC_KEY_FP (or RSA_PUBLIC_KEY_2_FP) must be {ctx.fingerprint}"
            if ctx.fingerprint
            else ""
        )
        return Classified(
            Reason.AUTHENTICATION_FAILED,
            f"Snowflake rejected the key-pair login of user {user}: JWT token is invalid "
            f"(390144){hint}",
            "authenticate",
        )
    if code == ROLE_NOT_GRANTED:
        role = repr(ctx.role) if ctx.role else "the requested role"
        return Classified(
            Reason.PERMISSION_DENIED,
            f"role {role} is not granted to user {user} (390189)",
            "role",
        )
    if code == OBJECT_NOT_FOUND_AT_LOGIN:
        low = text.lower()
        if "warehouse" in low:
            what, stage = f"warehouse {ctx.warehouse!r}", "warehouse"
        elif "schema" in low:
            what, stage = f"schema {ctx.database}.{ctx.schema}", "database"
        elif "database" in low:
            what, stage = f"database {ctx.database!r}", "database"
        else:
            what, stage = "an object of the session (database, schema or warehouse)", "database"
        return Classified(
            Reason.NOT_FOUND,
            f"{what} does not exist or not authorized for the session's role (390201)",
            stage,
        )
    if code == IP_NOT_ALLOWED:
        return Classified(
            Reason.PERMISSION_DENIED,
            f"Snowflake refused the login by network policy (390422): {text}",
            "authenticate",
        )
    if code == SQL_OBJECT_NOT_FOUND:
        return Classified(Reason.NOT_FOUND, f"{text} ({code:06d})", during)
    if code == SQL_INSUFFICIENT_PRIVILEGES:
        return Classified(Reason.PERMISSION_DENIED, f"{text} ({code:06d})", during)
    network = _network_cause(exc, str(ctx.target))
    if network is not None:
        return Classified(network[0], network[1], during)
    label = f"Snowflake error {code}" if code is not None else type(exc).__name__
    return Classified(Reason.PROVIDER_ERROR, f"{label}: {text}", during)


# --- a bounded pool for the blocking connector --------------------------------------------------


class _Call:
    __slots__ = ("abandoned", "finished")

    def __init__(self) -> None:
        self.finished = False
        self.abandoned = False


class BlockingCallRunner(Generic[T]):
    """Runs blocking calls on at most ``max_workers`` threads, without ever queueing forever.

    A call whose awaiting coroutine is cancelled (its test timed out) keeps its thread until
    the driver gives up; it is *abandoned*. When all threads are held by abandoned calls, new
    calls fail at once with a Timeout that says so. Otherwise a call waits for a free thread
    at most until its deadline.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._busy = 0
        self._abandoned = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    @property
    def abandoned(self) -> int:
        with self._lock:
            return self._abandoned

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix=self._name
                )
            return self._pool

    async def _reserve(self, deadline: float) -> None:
        while True:
            with self._lock:
                if self._busy < self.max_workers:
                    self._busy += 1
                    return
                stuck = self._abandoned
            if stuck >= self.max_workers:
                raise ProbeFailure(
                    Reason.TIMEOUT,
                    f"all {self.max_workers} Snowflake worker threads are still held by earlier "
                    "tests whose servers never answered; not starting another until one is free",
                )
            if time.monotonic() >= deadline:
                raise ProbeFailure(
                    Reason.TIMEOUT,
                    f"no free Snowflake worker thread within the test's timeout "
                    f"({self.max_workers} busy)",
                )
            await asyncio.sleep(0.02)

    def _finish(self, call: _Call) -> bool:
        """Release the call's thread; True when nobody waits for its result any more."""
        with self._lock:
            call.finished = True
            self._busy -= 1
            if call.abandoned:
                self._abandoned -= 1
            return call.abandoned

    async def run(
        self,
        fn: Callable[[], T],
        *,
        deadline: float,
        cleanup: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` on a worker thread. ``cleanup`` gets its result if nobody takes it."""
        await self._reserve(deadline)
        call = _Call()

        def work() -> T:
            try:
                result = fn()
            except BaseException:
                self._finish(call)
                raise
            if self._finish(call) and cleanup is not None:
                _quietly(cleanup, result)
            return result

        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        try:
            job = self._executor().submit(work)
        except BaseException:
            self._finish(call)
            raise

        def deliver(done: concurrent.futures.Future[T]) -> None:
            if waiter.done():
                return
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())

        def hand_over(done: concurrent.futures.Future[T]) -> None:
            # the loop may be gone when an abandoned call ends: nobody is waiting then
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, done)

        job.add_done_callback(hand_over)
        try:
            return await waiter
        except asyncio.CancelledError:
            with self._lock:
                finished_first = call.finished
                if not finished_first:
                    call.abandoned = True
                    self._abandoned += 1
            if finished_first and cleanup is not None:
                job.add_done_callback(functools.partial(_cleanup_result, cleanup))
            raise

    def detach(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the background (closing a connection); nobody waits for it."""
        call = _Call()
        with self._lock:
            self._busy += 1

        def work() -> None:
            try:
                _quietly(lambda _: fn(), None)
            finally:
                self._finish(call)

        try:
            self._executor().submit(work)
        except RuntimeError:  # interpreter shutting down
            self._finish(call)


def _quietly(fn: Callable[[Any], object], arg: Any) -> None:
    try:
        fn(arg)
    except Exception:  # cleanup of a test nobody waits for: nothing useful to do with errors
        return


def _cleanup_result(cleanup: Callable[[Any], None], done: concurrent.futures.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        _quietly(cleanup, done.result())


_RUNNER: BlockingCallRunner[Any] = BlockingCallRunner(WORKER_THREADS, "snowflake-probe")


# --- the blocking part (runs on worker threads) -------------------------------------------------

_connector_ready = threading.Lock()
_connector_quiet = False


def _prepare_connector_import() -> None:
    """Settings that must be in place before the connector is imported and used."""
    global _connector_quiet
    # without it, about one connect in 25 stalls ~5 s probing cloud metadata endpoints
    os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
    with _connector_ready:
        if _connector_quiet:
            return
        # The connector logs request bodies and tokens at DEBUG/INFO (masked by its own
        # filter, which is pattern-based): keep its loggers at WARNING unless the operator's
        # logging configuration chose a level for them.
        connector_logger = logging.getLogger("snowflake.connector")
        if connector_logger.level == logging.NOTSET:
            connector_logger.setLevel(logging.WARNING)
        _connector_quiet = True


def _open_connection(params: dict[str, Any], private_key_der: bytes | None) -> Any:
    import snowflake.connector

    kwargs = dict(params)
    if private_key_der is not None:
        from snowflake.connector.auth import AuthByKeyPair

        auth = AuthByKeyPair(private_key=private_key_der, timeout=params["login_timeout"])
        # A key-pair login otherwise waits JWT_CNXN_WAIT_TIME (10 s) per request, whatever
        # socket_timeout says: hold it to the test's budget.
        auth._socket_timeout = params["socket_timeout"]
        kwargs["auth_class"] = auth
    return snowflake.connector.connect(**kwargs)


def _close(conn: Any) -> None:
    conn.close()


def _warehouse_state(conn: Any, warehouse: str) -> str | None:
    """The warehouse's state from ``SHOW WAREHOUSES`` (metadata: it never resumes it)."""
    name = identifier(warehouse)
    literal = name.replace("\\", "\\\\").replace("'", "''")
    cursor = conn.cursor()
    try:
        cursor.execute(f"SHOW WAREHOUSES LIKE '{literal}'")
        columns = [str(d[0]).lower() for d in cursor.description or ()]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if "name" not in columns or "state" not in columns:
        raise ProbeFailure(
            Reason.PROVIDER_ERROR, "SHOW WAREHOUSES did not return name and state columns"
        )
    name_at, state_at = columns.index("name"), columns.index("state")
    for row in rows:
        if row[name_at] == name:
            return str(row[state_at])
    return None


def _current_version(conn: Any) -> str:
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT CURRENT_VERSION()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not row or row[0] is None:
        raise ProbeFailure(Reason.PROVIDER_ERROR, "SELECT CURRENT_VERSION() returned no row")
    return str(row[0])


# --- the provider --------------------------------------------------------------------------------


def _sf(spec: ConnectionSpec) -> SnowflakeSpec:
    assert spec.snowflake is not None  # guaranteed by ConnectionSpec validation
    return spec.snowflake


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _proxy_for(target: SnowflakeTarget) -> str | None:
    """The HTTP(S) proxy from the environment the connector will go through, if any."""
    proxy = urllib.request.getproxies().get(target.protocol)
    if proxy and not urllib.request.proxy_bypass(target.host):
        return proxy
    return None


async def _check_reachable(
    target: SnowflakeTarget, deadline: float, addresses: Sequence[str] = ()
) -> str:
    """One TCP handshake, so that a refused or silent endpoint is told apart in time.

    The connector retries refused connections until its login timeout, which would turn
    "nothing listens there" into a Timeout. The handshake goes to an address the egress
    policy checked; the connector resolves the name again itself (its HTTP stack offers no
    way to pin the address), so for Snowflake the policy is enforced at resolution time.
    """
    if _proxy_for(target):
        return f"{target} is reached through the proxy set in the environment"
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addresses[0] if addresses else target.host, target.port),
            timeout=max(deadline - time.monotonic(), 0.001),
        )
    except TimeoutError:
        raise ProbeFailure(
            Reason.TIMEOUT, f"{target} did not accept a TCP connection in time"
        ) from None
    except socket.gaierror:
        raise ProbeFailure(
            Reason.UNREACHABLE, f"the host {target.host} could not be resolved (DNS)"
        ) from None
    except ConnectionRefusedError:
        raise ProbeFailure(
            Reason.UNREACHABLE, f"cannot reach {target}: connection refused"
        ) from None
    except OSError as exc:
        raise ProbeFailure(
            Reason.UNREACHABLE, f"cannot reach {target}: {exc.strerror or type(exc).__name__}"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"reached {target} ({target.protocol})"


class SnowflakeProvider:
    name = "snowflake"
    driver_modules: tuple[str, ...] = ("snowflake.connector",)

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> SnowflakeCredentials:
        sf = _sf(spec)
        username = secret.require_text("username", "user")
        if sf.auth_method == "password":
            return SnowflakeCredentials(username=username, password=secret.require_text("password"))
        pem = secret.require_bytes("private_key")
        passphrase = secret.optional_bytes("private_key_passphrase")
        der, fingerprint = load_private_key(pem, passphrase, secret.secret_name)
        return SnowflakeCredentials(
            username=username, private_key_der=der, public_key_fingerprint=fingerprint
        )

    def destinations(
        self, spec: ConnectionSpec, credentials: SnowflakeCredentials
    ) -> list[Destination]:
        target = target_of(_sf(spec))
        return [Destination(target.host, target.port, "Snowflake")]

    def stage_order(self) -> list[str]:
        return ["connect", "authenticate", "role", "database", "warehouse", "query"]

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: SnowflakeCredentials,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        runner = _RUNNER
        deadline = time.monotonic() + timeout
        sf = _sf(spec)
        target = target_of(sf)
        ctx = LoginContext(
            user=credentials.username,
            target=target,
            role=sf.role,
            database=sf.database,
            schema=sf.schema_,
            warehouse=sf.warehouse,
            fingerprint=credentials.public_key_fingerprint,
        )
        with stages.stage("connect") as note:
            note.message = await _check_reachable(
                target, deadline, (resolved or {}).get(target.host, ())
            )

        _prepare_connector_import()
        params = connect_params(sf, credentials, target, deadline - time.monotonic())
        started = time.monotonic()
        try:
            conn = await runner.run(
                functools.partial(_open_connection, params, credentials.private_key_der),
                deadline=deadline,
                cleanup=_close,
            )
        except ProbeFailure as failure:  # no worker thread for it
            stages.failed("authenticate", failure.message, _ms(started))
            raise
        except Exception as exc:
            failed = classify_error(exc, ctx, during="authenticate")
            _record_login_failure(stages, failed, sf, _ms(started))
            raise ProbeFailure(failed.reason, failed.message) from None

        try:
            _record_login(stages, sf, conn, credentials, _ms(started))
            state = None
            if sf.warehouse:
                with stages.stage("warehouse") as note:
                    state = await self._query(
                        runner,
                        functools.partial(_warehouse_state, conn, sf.warehouse),
                        ctx,
                        deadline,
                        "warehouse",
                    )
                    if state is None:
                        raise ProbeFailure(
                            Reason.NOT_FOUND,
                            f"warehouse {sf.warehouse!r} does not exist or not authorized "
                            "(SHOW WAREHOUSES does not list it for the session's role)",
                        )
                    note.message = _warehouse_message(sf.warehouse, state)
            else:
                stages.skipped("warehouse", "no warehouse in spec")
            with stages.stage("query") as note:
                version = await self._query(
                    runner, functools.partial(_current_version, conn), ctx, deadline, "query"
                )
                note.message = f"SELECT CURRENT_VERSION() returned {version}"
        finally:
            runner.detach(functools.partial(_close, conn))
        return ProbeSuccess(
            server_version=f"Snowflake {version}",
            public_key_fingerprint=credentials.public_key_fingerprint,
            warehouse_state=state,
        )

    async def _query(
        self,
        runner: BlockingCallRunner[Any],
        fn: Callable[[], T],
        ctx: LoginContext,
        deadline: float,
        stage: str,
    ) -> T:
        try:
            result: T = await runner.run(fn, deadline=deadline)
        except ProbeFailure:
            raise
        except Exception as exc:
            failed = classify_error(exc, ctx, during=stage)
            raise ProbeFailure(failed.reason, failed.message) from None
        return result


def _warehouse_message(warehouse: str, state: str) -> str:
    if state.upper() == "SUSPENDED":
        return (
            f"warehouse {warehouse!r} is SUSPENDED; it was not resumed "
            "(it resumes on demand when real work comes)"
        )
    return f"warehouse {warehouse!r} is {state.upper()}"


def _record_login(
    stages: Stages,
    sf: SnowflakeSpec,
    conn: Any,
    credentials: SnowflakeCredentials,
    elapsed_ms: int,
) -> None:
    how = (
        f"a key pair ({credentials.public_key_fingerprint})"
        if credentials.private_key_der is not None
        else "a password"
    )
    stages.passed(
        "authenticate", f"authenticated as {credentials.username!r} with {how}", elapsed_ms
    )
    session_role = getattr(conn, "role", None)
    if sf.role:
        stages.passed("role", f"role {sf.role!r} is granted and in use")
    elif session_role:
        stages.passed(
            "role", f"no role in spec; the user's default role {session_role!r} is in use"
        )
    else:
        stages.passed("role", "no role in spec; the user's default role is in use")
    if sf.database:
        stages.passed(
            "database", f"database {sf.database!r} and schema {sf.schema_!r} exist and are usable"
        )
    else:
        stages.skipped("database", "no database in spec")


def _record_login_failure(
    stages: Stages, failed: Classified, sf: SnowflakeSpec, elapsed_ms: int
) -> None:
    """Which login stages passed before the one Snowflake refused (it checks in this order)."""
    if failed.stage == "authenticate":
        stages.failed("authenticate", failed.message, elapsed_ms)
        return
    stages.passed("authenticate", "credentials accepted", elapsed_ms)
    for name, value in (("role", sf.role), ("database", sf.database), ("warehouse", sf.warehouse)):
        if name == failed.stage:
            stages.failed(name, failed.message)
            return
        if value:
            stages.passed(name, f"{name} {value!r} accepted at login")


PROVIDER = SnowflakeProvider()
