"""The BigQuery emulator (crucible-emulator) as a subprocess, and the odd peers the tests need.

The emulator lives in its own virtualenv (its duckdb and sqlglot pins clash with other test
peers), made by ``scripts/ci/install-bigquery-emulator.sh``; :func:`ensure_installed` runs that
script, which is a fast no-op when the virtualenv is already there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.servers import LOCALHOST, StallServer, free_port, stop_process
from tests.support.waiting import poll_until

__all__ = ["Emulator", "RefusingPort", "SilentListener", "ensure_installed", "free_port"]

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
                        LOCALHOST,
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
        process = self._process
        assert process is not None
        return bool(poll_until(self._healthy, timeout, give_up=lambda: process.poll() is not None))

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - a fixed http://127.0.0.1 URL
                f"{self.base_url}/_crucible/health", timeout=1
            ) as answer:
                return bool(json.load(answer).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)

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


class SilentListener(StallServer):
    """A TCP port that completes connections but never answers."""


class RefusingPort:
    """A port bound but not listening: connections get RST (refused), and nobody can take it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOCALHOST, 0))
        self.port = int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()
