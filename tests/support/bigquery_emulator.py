"""The BigQuery emulator (crucible-emulator) as a subprocess, and the odd peers the tests need.

The emulator lives in its own virtualenv (its duckdb and sqlglot pins clash with other test
peers), made by ``scripts/ci/install-bigquery-emulator.sh``; :func:`ensure_installed` runs that
script, which is a fast no-op when the virtualenv is already there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "ci" / "install-bigquery-emulator.sh"
VENV = REPO / ".cache" / "venvs" / "bqemu"
CRUCIBLE = VENV / "bin" / "crucible"


def ensure_installed() -> Path:
    """Install the emulator's virtualenv if needed; fail loudly if that is impossible."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0 or not CRUCIBLE.exists():
        raise RuntimeError(
            f"{INSTALL_SCRIPT.name} failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return CRUCIBLE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """``crucible serve --dialect bigquery`` on 127.0.0.1, started and stopped by the tests."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 30.0) -> None:
        binary = ensure_installed()
        for _attempt in range(3):  # the port can be taken between free_port() and bind
            self.port = free_port()
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [
                        str(binary),
                        "serve",
                        "--dialect",
                        "bigquery",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready(ready_timeout):
                return
            self.stop()
        raise RuntimeError(f"the BigQuery emulator did not start:\n{self._log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(  # noqa: S310 - a fixed http://127.0.0.1 URL
                    f"{self.base_url}/_crucible/health", timeout=1
                ) as answer:
                    if json.load(answer).get("status") == "ok":
                        return True
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def create_dataset(self, project: str, dataset: str, location: str = "US") -> dict[str, Any]:
        """Create a dataset directly in the emulator (behind the front: no auth needed)."""
        body = json.dumps(
            {"datasetReference": {"projectId": project, "datasetId": dataset}, "location": location}
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - a fixed http://127.0.0.1 URL
            f"{self.base_url}/bigquery/v2/projects/{project}/datasets",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            result: dict[str, Any] = json.load(answer)
            return result


class SilentListener:
    """A TCP port that completes connections (the kernel's backlog) but never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RefusingPort:
    """A port bound but not listening: connections get RST (refused), and nobody can take it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()
