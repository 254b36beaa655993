"""Start fakesnow (the Snowflake emulator) from its own virtualenv, and odd peers for tests.

fakesnow runs in ``.cache/venvs/fakesnow`` (made by ``scripts/ci/install-snowflake-emulator.sh``,
which this module runs when the virtualenv is missing) as a subprocess on a free port of
127.0.0.1. Its dependency pins clash with other emulators', so it never shares a virtualenv.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.pgserver import CertificateAuthority
from tests.support.servers import (
    LOCALHOST,
    StallServer,
    TCPServer,
    free_port,
    stop_process,
    wait_for_port,
)

__all__ = [
    "FakesnowServer",
    "ensure_fakesnow",
    "fakesnow_server",
    "free_port",
    "refused_port",
    "self_signed_tls_listener",
    "silent_listener",
]

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "ci" / "install-snowflake-emulator.sh"
VENV = REPO / ".cache" / "venvs" / "fakesnow"
STARTUP_TIMEOUT = 60.0


def ensure_fakesnow() -> Path:
    """The fakesnow executable, installing its virtualenv first if needed (idempotent)."""
    executable = VENV / "bin" / "fakesnow"
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not executable.exists():
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return executable


@dataclass(frozen=True)
class FakesnowServer:
    host: str
    port: int
    log_path: Path


@contextlib.contextmanager
def fakesnow_server(log_dir: Path) -> Iterator[FakesnowServer]:
    """Run ``fakesnow -s`` until the context ends; fail loudly if it does not come up."""
    executable = ensure_fakesnow()
    port = free_port()
    log_path = log_dir / "fakesnow.log"
    env = dict(os.environ, SNOWFLAKE_DISABLE_PLATFORM_DETECTION="true")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(executable), "-s", "--host", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log_dir,
        )
    try:
        _wait_until_listening(process, port, log_path)
        yield FakesnowServer(LOCALHOST, port, log_path)
    finally:
        stop_process(process)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    if wait_for_port(port, STARTUP_TIMEOUT, process=process):
        return
    if process.poll() is not None:
        raise RuntimeError(
            f"fakesnow exited with {process.returncode} before listening:\n"
            f"{log_path.read_text(errors='replace')[-4000:]}"
        )
    raise RuntimeError(
        f"fakesnow did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s:\n"
        f"{log_path.read_text(errors='replace')[-4000:]}"
    )


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that completes TCP handshakes but never answers."""
    with StallServer() as server:
        yield server.port


def refused_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound then released: connections are refused)."""
    return free_port()


class _TLSServer(TCPServer):
    """Completes a TLS handshake with every client, reads its first bytes and hangs up."""

    io_timeout = 5.0

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with self._context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1024)


@contextlib.contextmanager
def self_signed_tls_listener(tmp_dir: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 whose certificate (for localhost) comes from a CA of its own,
    which nobody trusts."""
    cert_pem, key_pem = CertificateAuthority("untrusted test CA").issue(["localhost"])
    cert_path, key_path = tmp_dir / "tls.crt", tmp_dir / "tls.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    with _TLSServer(context) as server:
        yield server.port
