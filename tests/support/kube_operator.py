"""The operator as a real process (``warehouse-operator run``), for end-to-end tests.

It logs in the ordinary way (``KUBECONFIG``), watches the namespaces it is given, and writes
everything it prints to a log file that tests read (for example to prove that no Secret value
was ever logged). It can be stopped, killed and started again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from tests.support.servers import Managed, die_with_parent, kill_process, stop_process
from tests.support.waiting import poll_until

__all__ = ["REPO_ROOT", "OperatorProcess", "die_with_parent", "operator_command"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def operator_command() -> list[str]:
    """The console script installed next to the running interpreter (the project's virtualenv)."""
    script = Path(sys.executable).parent / "warehouse-operator"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "warehouse_operator.cli"]


class OperatorProcess(Managed):
    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespaces: Sequence[str],
        log_file: Path,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = tuple(namespaces)
        self.log_file = log_file
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        args = ["run", "--metrics-port", "0", "--health-port", "0"]
        if self.namespaces:
            args += ["--namespaces", ",".join(self.namespaces)]
        return operator_command() + args + list(self.extra_args)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        if self.running:
            return self
        env = {
            key: value
            for key, value in os.environ.items()
            # nothing of the test run's own configuration leaks into the operator's
            if not key.startswith(("WHC_", "KUBERNETES_")) and key != "KUBECONFIG"
        }
        env.update({"KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        self.starts += 1
        with open(self.log_file, "ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return self

    def takes_stop_signals(self) -> bool:
        """Whether the operator's own code runs and has SIGTERM in hand (blocked in its threads,
        taken by one of them). Before that, in the first tens of milliseconds of the
        interpreter starting, nothing of the operator exists yet to answer a signal."""
        if self._process is None:
            return False
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return True  # gone, or no /proc here: nothing to wait for
        for line in status.splitlines():
            if line.startswith("SigBlk:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
        return True

    def wait_until_stoppable(self, timeout: float = 5.0) -> None:
        poll_until(self.takes_stop_signals, timeout, 0.01, give_up=self._exited)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the operator to stop (SIGTERM), as Kubernetes does; kill it if it hangs."""
        if self.running:
            self.wait_until_stoppable()
        process, self._process = self._process, None
        if process is None:
            return None
        if stop_process(process, timeout):
            self._note(f"--- killed after not stopping within {timeout:.0f}s")
        return process.returncode

    def kill(self) -> None:
        """A crash: SIGKILL, no cleanup."""
        process, self._process = self._process, None
        if process is not None:
            kill_process(process)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def _note(self, text: str) -> None:
        with open(self.log_file, "ab") as log:
            log.write(text.encode() + b"\n")

    def _exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        if poll_until(lambda: needle in self.log_text(), timeout, 0.1, give_up=self._exited):
            return
        raise AssertionError(f"{needle!r} not in the operator's log; its end:\n{self.log_tail()}")
