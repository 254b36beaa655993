"""Throwaway PostgreSQL servers, a test certificate authority and a silent TCP server.

Used by the integration, e2e and benchmark suites; nothing here talks to anything but
127.0.0.1. The API:

``PostgresServer(tls="off" | "on" | "required")``
    A fresh cluster from the installed binaries (``/usr/lib/postgresql/*/bin``, the newest
    version; ``scripts/ci/install-postgres.sh`` installs them) on 127.0.0.1 and a free port,
    with scram-sha-256 password authentication and ``fsync=off``. ``tls="on"`` serves TLS with
    a certificate for ``localhost`` signed by a throwaway CA (``ca_pem``); ``tls="required"``
    also refuses connections without TLS (``hostssl`` only). It holds:

    - ``user`` / ``password`` / ``database``: a login role that owns ``database``;
    - ``no_connect_user`` / ``no_connect_password``: a login role without the CONNECT
      privilege on ``database`` (connecting there fails with "permission denied");
    - ``superuser`` / ``superuser_password``;
    - ``host``, ``port``, ``server_version`` (e.g. ``15.18 (Debian 15.18-0+deb12u1)``),
      ``ca_pem``, ``cert_names`` (the names the server certificate is valid for).

    ``start()`` / ``stop()``, or use it as a context manager. ``secret_data()`` and
    ``postgres_spec()`` build the pieces of a WarehouseConnection that point at it.

    When the tests run as root (CI) the server runs as the ``postgres`` OS user (PostgreSQL
    refuses root) via ``runuser``; otherwise as the current user. Its files live in /dev/shm
    when that has room (else the temp folder) and are deleted by ``stop()`` or at exit;
    ``initdb`` runs once per process and every server starts from a copy of that cluster.

``CertificateAuthority()``
    A self-signed CA (``cert_pem``) that ``issue(names)`` server certificates for DNS names
    from, made the way the operator makes its webhook's (``warehouse_operator.webhooks``).

``SilentServer()`` / ``unused_port()``
    ``StallServer`` and ``free_port`` of ``tests.support.servers``, by their names here.
"""

from __future__ import annotations

import atexit
import datetime
import glob
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from tests.support.encoding import b64
from tests.support.servers import LOCALHOST, Managed
from tests.support.servers import StallServer as SilentServer
from tests.support.servers import free_port as unused_port
from warehouse_operator.webhooks import generate_ca, issue_serving_certificate

if TYPE_CHECKING:  # psycopg is imported where a server is used: not every user has it
    from psycopg.sql import Composed

__all__ = [
    "CertificateAuthority",
    "PostgresServer",
    "PostgresServerError",
    "SilentServer",
    "TLSMode",
    "find_pg_bindir",
    "short_version",
    "unused_port",
]

TLSMode = Literal["off", "on", "required"]

_START_ATTEMPTS = 3


class PostgresServerError(RuntimeError):
    """The server could not be set up; the message includes the end of its log."""


def find_pg_bindir() -> Path:
    """The bin folder of the newest installed PostgreSQL (``$PG_BINDIR`` overrides)."""
    override = os.environ.get("PG_BINDIR")
    if override:
        candidates = [Path(override)]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = sorted(
            (Path(p) for p in found),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresServerError(
        "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: "
        "run scripts/ci/install-postgres.sh (or set PG_BINDIR)"
    )


# --- certificates ------------------------------------------------------------------------------

_CERT_LIFETIME = datetime.timedelta(days=2)


class CertificateAuthority:
    """A throwaway CA: a self-signed root that issues server certificates."""

    def __init__(self, common_name: str = "warehouse-operator test CA") -> None:
        self.cert_pem, self._key_pem = generate_ca(common_name, _CERT_LIFETIME)

    def issue(self, names: Sequence[str]) -> tuple[bytes, bytes]:
        """A server certificate for the DNS ``names``: (cert PEM, key PEM)."""
        if not names:
            raise ValueError("a server certificate needs at least one name")
        return issue_serving_certificate(self.cert_pem, self._key_pem, names, _CERT_LIFETIME)


# --- PostgreSQL --------------------------------------------------------------------------------


def _traversable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach files below ``path``."""
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in (path, *path.parents))


class _Template:
    """One initdb per process; every server starts from a copy of it."""

    def __init__(self, bindir: Path, as_postgres: bool) -> None:
        self.superuser_password = "super-" + secrets.token_hex(12)
        self.base = _make_private_dir(as_postgres)
        self.data = self.base / "data"
        pwfile = _write_owned(
            self.base / "superuser.pw", self.superuser_password + "\n", as_postgres
        )
        _run_pg(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PostgresServer.superuser,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
                "--wal-segsize=1",  # 1 MB instead of 16: less to write and to copy per server
            ],
            as_postgres=as_postgres,
            cwd=self.base,
        )
        pwfile.unlink()
        atexit.register(shutil.rmtree, self.base, ignore_errors=True)


_templates: dict[tuple[Path, bool], _Template] = {}
_templates_lock = threading.Lock()


def _template_cluster(bindir: Path, as_postgres: bool) -> _Template:
    with _templates_lock:
        key = (bindir, as_postgres)
        if key not in _templates:
            _templates[key] = _Template(bindir, as_postgres)
        return _templates[key]


_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 512 * 1024 * 1024


def _scratch_parent(as_postgres: bool) -> Path:
    """Where clusters live: memory (/dev/shm) when it has room, as nothing needs to persist.

    On a disk, copying and starting a cluster takes a second or more on a busy machine; in
    memory a tenth of that. Containers often give /dev/shm only 64 MB: then the temp folder.
    """
    try:
        usage = os.statvfs(_SHM)
        if usage.f_bavail * usage.f_frsize >= _SHM_MIN_FREE and os.access(_SHM, os.W_OK):
            return _SHM
    except OSError:
        pass
    parent = Path(tempfile.gettempdir())
    if as_postgres and not _traversable_by_others(parent):
        parent = Path("/tmp")
    return parent


def _make_private_dir(as_postgres: bool) -> Path:
    """A new temporary folder, owned by ``postgres`` when the server will run as that user."""
    parent = _scratch_parent(as_postgres)
    base = Path(tempfile.mkdtemp(prefix="whc-pg-", dir=parent))
    if as_postgres:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    return base


def _write_owned(path: Path, content: str | bytes, as_postgres: bool, mode: int = 0o600) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    if as_postgres:
        owner = pwd.getpwnam("postgres")
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _run_pg(
    argv: list[str], *, as_postgres: bool, cwd: Path | None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as the ``postgres`` user when we are root."""
    program = Path(argv[0]).name
    if as_postgres:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd or "/",
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )
    if check and result.returncode != 0:
        raise PostgresServerError(
            f"{program} failed (exit {result.returncode}): "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        )
    return result


class PostgresServer(Managed):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see the module docstring)."""

    host = LOCALHOST
    database = "appdb"
    user = "app"
    no_connect_user = "outsider"
    superuser = "postgres"

    def __init__(
        self,
        tls: TLSMode = "off",
        *,
        cert_names: Sequence[str] = ("localhost",),
        ca: CertificateAuthority | None = None,
    ) -> None:
        if tls not in ("off", "on", "required"):
            raise ValueError(f"tls must be 'off', 'on' or 'required', not {tls!r}")
        self.tls: TLSMode = tls
        self.cert_names = tuple(cert_names)
        self._ca = ca if ca is not None or tls == "off" else CertificateAuthority()
        # hex only: no quoting questions anywhere, and easy to spot if one ever leaks
        self.password = "app-" + secrets.token_hex(12)
        self.no_connect_password = "outsider-" + secrets.token_hex(12)
        self.superuser_password = ""  # set by start(): shared with this process's template
        self.port = 0
        self.server_version = ""
        self._bindir = find_pg_bindir()
        self._base: Path | None = None
        self._running = False
        self._as_postgres = os.geteuid() == 0

    # -- public API ---------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        """PEM of the CA that signed the server certificate (only with TLS)."""
        if self._ca is None:
            raise PostgresServerError("this server has TLS off: there is no CA")
        return self._ca.cert_pem

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Self:
        if self._running:
            return self
        self._base = self._make_base()
        try:
            self._initdb()
            self._configure()
            self._start_postmaster()
            self._create_roles()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and delete its files."""
        base, self._base = self._base, None
        if base is None:
            return
        if self._running:
            self._running = False
            pg_ctl, data = str(self._bindir / "pg_ctl"), str(base / "data")
            self._run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], check=False)
        atexit.unregister(self.stop)
        shutil.rmtree(base, ignore_errors=True)

    def secret_data(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        ca: bool = False,
    ) -> dict[str, str]:
        """A Secret's ``data`` (base64 values) for ``user`` (or ``username``), with ``ca.crt`` if asked."""
        data = {
            "username": b64(username or self.user),
            "password": b64(self.password if password is None else password),
        }
        if ca:
            data["ca.crt"] = b64(self.ca_pem)
        return data

    def postgres_spec(self, **overrides: Any) -> dict[str, Any]:
        """The ``spec.postgres`` block that points at this server (keys may be overridden)."""
        return {"host": self.host, "port": self.port, "database": self.database} | overrides

    def run_as_superuser(self, *statements: str | Composed) -> str:
        """Run ``statements`` in database ``postgres`` as the superuser, each committed at once;
        the server's version (``SHOW server_version``), read first."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            dbname="postgres",
            user=self.superuser,
            password=self.superuser_password,
            sslmode="require" if self.tls != "off" else "disable",
            connect_timeout=10,
            autocommit=True,
        ) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            for statement in statements:
                conn.execute(statement)
        return str(row[0]) if row else ""

    def log_tail(self, lines: int = 30) -> str:
        if self._base is None:
            return ""
        try:
            text = (self._base / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- steps --------------------------------------------------------------------------------

    def _make_base(self) -> Path:
        base = _make_private_dir(self._as_postgres)
        atexit.register(self.stop)  # a crashed test run must not leave a server behind
        return base

    def _write(self, name: str, content: str | bytes, mode: int = 0o600) -> Path:
        assert self._base is not None
        return _write_owned(self._base / name, content, self._as_postgres, mode)

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            return _run_pg(argv, as_postgres=self._as_postgres, cwd=self._base, check=check)
        except PostgresServerError as exc:
            raise PostgresServerError(f"{exc}\n{self.log_tail()}") from None

    def _initdb(self) -> None:
        """A new data folder: a copy of this process's template cluster (initdb is the slow part)."""
        assert self._base is not None
        template = _template_cluster(self._bindir, self._as_postgres)
        self.superuser_password = template.superuser_password
        self._run(["cp", "-a", str(template.data), str(self._base / "data")])

    def _configure(self) -> None:
        assert self._base is not None
        settings = {
            "listen_addresses": f"'{LOCALHOST}'",
            "unix_socket_directories": f"'{self._base}'",
            "password_encryption": "'scram-sha-256'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
            "max_connections": "50",
            "log_connections": "on",
            "ssl": "off",
        }
        if self.tls != "off":
            assert self._ca is not None
            cert_pem, key_pem = self._ca.issue(self.cert_names)
            cert = self._write("server.crt", cert_pem, 0o644)
            key = self._write("server.key", key_pem, 0o600)
            settings |= {"ssl": "on", "ssl_cert_file": f"'{cert}'", "ssl_key_file": f"'{key}'"}
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        # settings given later in postgresql.conf win, so appending is enough
        with open(self._base / "data" / "postgresql.conf", "a") as handle:
            handle.write("\n# throwaway test cluster\n" + conf)
        host_kind = "hostssl" if self.tls == "required" else "host"
        self._write(
            "data/pg_hba.conf",
            f"local all all scram-sha-256\n{host_kind} all all {LOCALHOST}/32 scram-sha-256\n",
        )

    def _start_postmaster(self) -> None:
        assert self._base is not None
        for attempt in range(_START_ATTEMPTS):
            self.port = unused_port()
            result = self._run(
                [
                    str(self._bindir / "pg_ctl"),
                    "-D",
                    str(self._base / "data"),
                    "-l",
                    str(self._base / "server.log"),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                check=False,
            )
            if result.returncode == 0:
                self._running = True
                return
            # another process may have taken the port between picking and binding it
            if "already in use" not in self.log_tail() or attempt == _START_ATTEMPTS - 1:
                raise PostgresServerError(
                    f"pg_ctl start failed (exit {result.returncode}): {result.stderr.strip()}\n"
                    f"{self.log_tail()}"
                )

    def _create_roles(self) -> None:
        from psycopg import sql

        user, db = sql.Identifier(self.user), sql.Identifier(self.database)
        self.server_version = self.run_as_superuser(
            *(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
                for role, password in (
                    (self.user, self.password),
                    (self.no_connect_user, self.no_connect_password),
                )
            ),
            sql.SQL("CREATE DATABASE {} OWNER {}").format(db, user),
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(db),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, user),
        )

    def __repr__(self) -> str:
        return f"PostgresServer(tls={self.tls!r}, port={self.port}, running={self._running})"


_VERSION_RE = re.compile(r"^(\d+(?:\.\d+)?)")


def short_version(server_version: str) -> str:
    """``15.18 (Debian 15.18-0+deb12u1)`` -> ``15.18``."""
    match = _VERSION_RE.match(server_version)
    return match.group(1) if match else server_version
