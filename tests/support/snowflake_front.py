"""A strict front for fakesnow: the login checks and answers real Snowflake gives.

fakesnow (in server mode) speaks the Snowflake REST protocol well enough for the real
``snowflake-connector-python``, but it accepts any account, user, password or JWT and creates
databases on connect. This front is a small HTTP proxy placed before it that knows an
account's users, passwords, registered public keys, roles, grants, databases and warehouses,
and answers ``POST /session/v1/login-request`` the way Snowflake does:

- wrong user or password                       -> 390100 "Incorrect username or password was specified."
- JWT not signed by a key registered for the user (or for another account/user, or expired)
                                               -> 390144 "JWT token is invalid."
- role in the connect string not granted        -> 390189
- with ``CLIENT_VALIDATE_DEFAULT_PARAMETERS``: database / schema / warehouse missing or not
  usable by the session's role                 -> 390201 "... does not exist or not authorized."

Failed logins are answered with HTTP 200 and ``success: false``, as Snowflake does; the
connector turns them into ``DatabaseError`` with the code as ``errno``. Successful logins are
passed on to fakesnow, and the ``sessionInfo`` of its answer is completed with the session's
warehouse and role (fakesnow leaves them out).

One statement is emulated here rather than passed on: ``SHOW WAREHOUSES LIKE '<pattern>'``.
fakesnow answers it with one fixed, always-started warehouse; the front answers with the
account's warehouses that the session's role may use, with their configured state (so a
SUSPENDED warehouse can be shown), in the JSON result format Snowflake uses for SHOW
commands, with a subset of the real columns (name, state, type, size, auto_suspend,
auto_resume, owner, comment). Every other request goes to fakesnow unchanged.

The front also records every SQL statement it sees, so tests can prove that a connection
test ran nothing that would need (and so resume) a warehouse.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tests.support.encoding import b64
from tests.support.servers import BackgroundHTTPServer, QuietHandler

# Snowflake's login error codes and messages, as the real service sends them.
INCORRECT_PASSWORD = ("390100", "Incorrect username or password was specified.")
INVALID_JWT = ("390144", "JWT token is invalid.")
ROLE_NOT_GRANTED = "390189"
OBJECT_NOT_FOUND = "390201"

SHOW_STATEMENT_TYPE_ID = 0x4400  # SCL + SHOW, as Snowflake reports SHOW commands

_SHOW_WAREHOUSES_RE = re.compile(
    r"^\s*show\s+warehouses\s+like\s+'((?:[^']|'')*)'\s*;?\s*$", re.IGNORECASE
)
_UPSTREAM_HEADERS = ("content-type", "content-encoding", "accept", "authorization", "user-agent")


def fingerprint_of(public_key: PublicKeyTypes) -> str:
    """``SHA256:`` + base64 of the SHA-256 of the DER SubjectPublicKeyInfo (RSA_PUBLIC_KEY_FP)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + b64(hashlib.sha256(der).digest())


def _ident(name: str) -> str:
    """Snowflake's rule for identifiers: unquoted ones are case-insensitive (stored upper)."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.upper()


@dataclass
class Warehouse:
    name: str
    state: str = "SUSPENDED"  # SUSPENDED, STARTED, RESIZING, ...
    size: str = "X-Small"
    auto_suspend: int = 600
    auto_resume: bool = True
    owner: str = "SYSADMIN"


@dataclass
class Role:
    name: str
    databases: set[str] = field(default_factory=set)
    warehouses: set[str] = field(default_factory=set)


@dataclass
class User:
    name: str
    password: str | None = None
    public_keys: list[PublicKeyTypes] = field(default_factory=list)
    default_role: str = "PUBLIC"
    roles: set[str] = field(default_factory=lambda: {"PUBLIC"})


@dataclass
class Account:
    """What the front knows about the one account it serves."""

    name: str
    users: dict[str, User] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    databases: dict[str, set[str]] = field(default_factory=dict)  # database -> schemas
    warehouses: dict[str, Warehouse] = field(default_factory=dict)

    def user(self, login_name: str) -> User | None:
        return self.users.get(_ident(login_name))

    def grants_of(self, role: str) -> Role:
        return self.roles.get(role, Role(role))


@dataclass(frozen=True)
class LoginRecord:
    user: str
    authenticator: str
    code: str  # "OK" or the Snowflake error code
    database: str | None
    warehouse: str | None
    role: str | None


@dataclass
class _Session:
    user: str
    role: str
    database: str | None
    schema: str | None
    warehouse: str | None


class _LoginRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StrictSnowflakeFront(BackgroundHTTPServer):
    """The proxy; ``start()`` serves on 127.0.0.1 in a background thread."""

    def __init__(self, account: Account, upstream_host: str, upstream_port: int) -> None:
        self.account = account
        self.upstream = (upstream_host, upstream_port)
        self.statements: list[str] = []
        self.logins: list[LoginRecord] = []
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        super().__init__(_FrontHandler)

    @property
    def url(self) -> str:
        return self.base_url

    def statements_since(self, mark: int) -> list[str]:
        with self._lock:
            return list(self.statements[mark:])

    def logins_since(self, mark: int) -> list[LoginRecord]:
        with self._lock:
            return list(self.logins[mark:])

    # --- login -------------------------------------------------------------------------

    def handle_login(self, query: dict[str, str], body: dict[str, Any]) -> tuple[str, str, str]:
        """Check a login; returns (user, role, authenticator) or raises _LoginRefused."""
        data = body.get("data") or {}
        authenticator = str(data.get("AUTHENTICATOR") or "SNOWFLAKE").upper()
        if authenticator == "SNOWFLAKE_JWT":
            user = self._check_jwt(str(data.get("TOKEN") or ""))
        elif authenticator == "SNOWFLAKE":
            user = self._check_password(str(data.get("LOGIN_NAME") or ""), data.get("PASSWORD"))
        else:
            raise _LoginRefused("390100", f"Authenticator {authenticator} is not supported here.")

        role = _ident(query["roleName"]) if query.get("roleName") else user.default_role
        if role not in user.roles:
            raise _LoginRefused(
                ROLE_NOT_GRANTED,
                f"Role '{role}' specified in the connect string is not granted to this user. "
                "Contact your local system administrator, or attempt to login with another "
                "role, e.g. PUBLIC.",
            )
        return user.name, role, authenticator

    def _check_password(self, login_name: str, password: Any) -> User:
        user = self.account.user(login_name)
        if user is None or user.password is None or password != user.password:
            raise _LoginRefused(*INCORRECT_PASSWORD)
        return user

    def _check_jwt(self, token: str) -> User:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _LoginRefused(*INVALID_JWT) from None
        match = re.fullmatch(r"([^.]+)\.(.+)\.(SHA256:[A-Za-z0-9+/=]+)", str(claims.get("iss")))
        if match is None:
            raise _LoginRefused(*INVALID_JWT)
        account, login_name, fingerprint = match.groups()
        user = self.account.user(login_name)
        if (
            user is None
            or account != self.account.name.upper()
            or claims.get("sub") != f"{account}.{login_name}"
        ):
            raise _LoginRefused(*INVALID_JWT)
        key = next((k for k in user.public_keys if fingerprint_of(k) == fingerprint), None)
        if key is None:
            raise _LoginRefused(*INVALID_JWT)
        try:
            jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=["RS256", "ES256", "ES384", "ES512"],
                options={"require": ["iss", "sub", "iat", "exp"]},
                leeway=60,
            )
        except jwt.PyJWTError:
            raise _LoginRefused(*INVALID_JWT) from None
        return user

    def validate_defaults(
        self, role: str, database: str | None, schema: str | None, warehouse: str | None
    ) -> None:
        grants = self.account.grants_of(role)
        if database is not None and (
            database not in self.account.databases or database not in grants.databases
        ):
            raise _LoginRefused(
                OBJECT_NOT_FOUND, "The requested database does not exist or not authorized."
            )
        if (
            database is not None
            and schema is not None
            and schema not in self.account.databases[database]
        ):
            raise _LoginRefused(
                OBJECT_NOT_FOUND, "The requested schema does not exist or not authorized."
            )
        if warehouse is not None and (
            warehouse not in self.account.warehouses or warehouse not in grants.warehouses
        ):
            raise _LoginRefused(
                OBJECT_NOT_FOUND, "The requested warehouse does not exist or not authorized."
            )

    def usable(self, role: str, database: str | None, warehouse: str | None) -> tuple[bool, bool]:
        """Without validation, Snowflake silently leaves unusable defaults unset."""
        grants = self.account.grants_of(role)
        db_ok = database in self.account.databases and database in grants.databases
        wh_ok = warehouse in self.account.warehouses and warehouse in grants.warehouses
        return db_ok, wh_ok

    def record_login(self, record: LoginRecord) -> None:
        with self._lock:
            self.logins.append(record)

    def open_session(self, token: str, session: _Session) -> None:
        with self._lock:
            self._sessions[token] = session

    def session_for(self, authorization: str | None) -> _Session | None:
        match = re.fullmatch(r'Snowflake Token="(.*)"', authorization or "")
        if match is None:
            return None
        with self._lock:
            return self._sessions.get(match.group(1))

    def record_statement(self, sql: str) -> None:
        with self._lock:
            self.statements.append(sql)

    # --- SHOW WAREHOUSES (emulated) ------------------------------------------------------

    def show_warehouses(self, session: _Session, pattern: str) -> dict[str, Any]:
        regex = _like_to_regex(pattern.replace("''", "'"))
        grants = self.account.grants_of(session.role)
        rows = [
            [
                w.name,
                w.state,
                "STANDARD",
                w.size,
                str(w.auto_suspend),
                "true" if w.auto_resume else "false",
                w.owner,
                "",
            ]
            for name, w in sorted(self.account.warehouses.items())
            if name in grants.warehouses and regex.fullmatch(name)
        ]
        columns = [
            _column("name", "text"),
            _column("state", "text"),
            _column("type", "text"),
            _column("size", "text"),
            _column("auto_suspend", "fixed"),
            _column("auto_resume", "text"),
            _column("owner", "text"),
            _column("comment", "text"),
        ]
        return {
            "data": {
                "parameters": [],
                "rowtype": columns,
                "rowset": rows,
                "total": len(rows),
                "returned": len(rows),
                "queryId": str(uuid.uuid4()),
                "queryResultFormat": "json",
                "statementTypeId": SHOW_STATEMENT_TYPE_ID,
                "finalDatabaseName": session.database,
                "finalSchemaName": session.schema,
                "finalWarehouseName": session.warehouse,
                "finalRoleName": session.role,
                "sendResultTime": int(time.time() * 1000),
            },
            "code": None,
            "message": None,
            "success": True,
        }

    # --- upstream ----------------------------------------------------------------------

    def forward(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            kept = {k: v for k, v in headers if k.lower() in _UPSTREAM_HEADERS}
            conn.request(method, path, body=body or None, headers=kept)
            response = conn.getresponse()
            payload = response.read()
            if response.getheader("Content-Encoding", "") == "gzip":
                payload = gzip.decompress(payload)
            return (
                response.status,
                response.getheader("Content-Type", "application/json"),
                payload,
            )
        finally:
            conn.close()


def _column(name: str, kind: str) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": kind,
        "byteLength": None,
        "length": None,
        "scale": None,
        "precision": None,
        "collation": None,
    }
    if kind == "text":
        column.update(byteLength=16777216, length=16777216)
    else:
        column.update(precision=38, scale=0)
    return column


def _like_to_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE (``%``, ``_``, backslash escapes), case-insensitive as SHOW ... LIKE is."""
    out: list[str] = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _refusal(code: str, message: str, authenticator: str) -> dict[str, Any]:
    return {
        "data": {
            "nextAction": None,
            "inFlightCtx": None,
            "authnMethod": "KEYPAIR" if authenticator == "SNOWFLAKE_JWT" else "PASSWORD",
            "signInOptions": {},
        },
        "code": code,
        "message": message,
        "success": False,
        "headers": None,
    }


class _FrontHandler(QuietHandler):
    @property
    def owner(self) -> StrictSnowflakeFront:
        front: StrictSnowflakeFront = self.server.owner  # type: ignore[attr-defined]
        return front

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _json_body(self, raw: bytes) -> dict[str, Any]:
        if self.headers.get("Content-Encoding", "") == "gzip":
            raw = gzip.decompress(raw)
        value = json.loads(raw or b"{}")
        return value if isinstance(value, dict) else {}

    def _reply(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_payload(status, payload, content_type)

    def _reply_json(self, value: dict[str, Any]) -> None:
        self._reply(200, json.dumps(value).encode())

    def _dispatch(self, method: str) -> None:
        raw = self.read_body()
        parts = urlsplit(self.path)
        try:
            if method == "POST" and parts.path == "/session/v1/login-request":
                self._login(parts.query, raw)
            elif method == "POST" and parts.path == "/queries/v1/query-request":
                self._query(raw)
            else:
                self._pass_on(method, self.path, raw)
        except Exception as exc:  # a bug in the front: say so loudly to the client
            message = f"strict front failed: {type(exc).__name__}: {exc}"
            self._reply_json({"data": None, "code": "000000", "message": message, "success": False})

    def _pass_on(self, method: str, path: str, raw: bytes) -> None:
        status, content_type, payload = self.owner.forward(method, path, self.headers.items(), raw)
        self._reply(status, payload, content_type)

    def _login(self, raw_query: str, raw: bytes) -> None:
        front = self.owner
        query = dict(parse_qsl(raw_query))
        body = self._json_body(raw)
        data = body.get("data") or {}
        params = data.get("SESSION_PARAMETERS") or {}
        validate = bool(params.get("CLIENT_VALIDATE_DEFAULT_PARAMETERS"))
        database = _ident(query["databaseName"]) if query.get("databaseName") else None
        schema = _ident(query["schemaName"]) if query.get("schemaName") else None
        warehouse = _ident(query["warehouse"]) if query.get("warehouse") else None
        login_name = str(data.get("LOGIN_NAME") or "")
        authenticator = str(data.get("AUTHENTICATOR") or "SNOWFLAKE").upper()

        def record(code: str, role: str | None) -> None:
            front.record_login(
                LoginRecord(login_name, authenticator, code, database, warehouse, role)
            )

        try:
            user, role, authenticator = front.handle_login(query, body)
            if validate:
                front.validate_defaults(role, database, schema, warehouse)
        except _LoginRefused as refused:
            record(refused.code, query.get("roleName"))
            self._reply_json(_refusal(refused.code, refused.message, authenticator))
            return
        db_ok, wh_ok = front.usable(role, database, warehouse)
        session_db = database if db_ok else None
        session_schema = schema if db_ok else None
        session_wh = warehouse if wh_ok else None

        upstream_query = {k: v for k, v in query.items() if k not in ("databaseName", "schemaName")}
        if session_db is not None:
            upstream_query["databaseName"] = session_db
            if session_schema is not None:
                upstream_query["schemaName"] = session_schema
        path = "/session/v1/login-request?" + urlencode(upstream_query)
        status, content_type, payload = front.forward("POST", path, self.headers.items(), raw)
        answer = json.loads(payload)
        if status == 200 and answer.get("success"):
            answer_data = answer.setdefault("data", {})
            answer_data["sessionInfo"] = {
                "databaseName": session_db,
                "schemaName": session_schema,
                "warehouseName": session_wh,
                "roleName": role,
            }
            front.open_session(
                str(answer_data.get("token")),
                _Session(user, role, session_db, session_schema, session_wh),
            )
            record("OK", role)
        else:
            record(str(answer.get("code")), role)
        self._reply(status, json.dumps(answer).encode(), content_type)

    def _query(self, raw: bytes) -> None:
        front = self.owner
        body = self._json_body(raw)
        sql = str(body.get("sqlText") or "")
        front.record_statement(sql)
        match = _SHOW_WAREHOUSES_RE.match(sql)
        session = front.session_for(self.headers.get("Authorization"))
        if match is not None and session is not None:
            self._reply_json(front.show_warehouses(session, match.group(1)))
            return
        self._pass_on("POST", self.path, raw)
