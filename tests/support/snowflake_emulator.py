"""Start fakesnow (the Snowflake emulator) from its own virtualenv, and odd peers for tests.

fakesnow runs in ``.cache/venvs/fakesnow`` (made by ``scripts/ci/install-snowflake-emulator.sh``,
which this module runs when the virtualenv is missing) as a subprocess on a free port of
127.0.0.1. Its dependency pins clash with other emulators', so it never shares a virtualenv.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        yield FakesnowServer("127.0.0.1", port, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"fakesnow exited with {process.returncode} before listening:\n"
                f"{log_path.read_text(errors='replace')[-4000:]}"
            )
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"fakesnow did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s:\n"
        f"{log_path.read_text(errors='replace')[-4000:]}"
    )


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel's backlog) but never answers."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield int(sock.getsockname()[1])


def refused_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound then released: connections are refused)."""
    return free_port()


@contextlib.contextmanager
def self_signed_tls_listener(tmp_dir: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 whose certificate (for localhost, 127.0.0.1) nobody trusts."""
    import datetime
    import ipaddress
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_dir / "tls.crt", tmp_dir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1024)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()
