"""Run connection tests in a private network and file-system namespace, with our own DNS.

Egress tests need host names that resolve to chosen addresses: several at once, a cloud
metadata address, a different address on each lookup (DNS rebinding), or nothing at all.
Changing the machine's ``/etc/hosts`` or resolver would affect everything else on it, and
replacing the operator's resolver would test something other than what runs in production.
Instead, ``run_isolated`` starts a child process in new network and mount namespaces
(``unshare --net --mount``, as root): it has its own loopback interface, its own
``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/nsswitch.conf`` (bind-mounted over the real
ones, visible to that process only), and a small DNS server on its own 127.0.0.1:53. The code
under test — ``run_test``, psycopg, glibc's resolver — is unchanged and unaware.

The child (``python -m tests.reliability.isolated``) reads a JSON job on stdin and prints one
JSON result per case. A job holds ``servers`` to start in the child ({name: kind}; kinds:
``count`` accepts and closes connections, counting them, ``echo-auth-error`` is an
``EchoingPostgresServer``), and ``cases``, each with ``spec`` (a value ``"{port:NAME}"`` is
replaced by that server's port), ``secret`` (a Secret's data), ``policy`` (allowed / denied
CIDRs) and ``zone`` ({name: [answers of the 1st lookup, of the 2nd, ...]}, the last repeating;
a name not in the zone gets NXDOMAIN). A result holds the ProbeResult, the seconds it took,
what each server accepted, and every DNS question asked.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.servers import TCPServer

ROOT = Path(__file__).resolve().parents[2]
HOSTS = "127.0.0.1 localhost\n::1 localhost\n"
RESOLV = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
NSSWITCH = "hosts: files dns\n"


class IsolationUnavailable(RuntimeError):
    pass


def run_isolated(job: dict[str, Any], workdir: Path, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Run ``job`` in a child process with private namespaces; its results, in case order."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("unshare (util-linux) is not installed")
    if os.geteuid() != 0:
        raise IsolationUnavailable("private network and mount namespaces need root")
    files = {"hosts": HOSTS, "resolv.conf": RESOLV, "nsswitch.conf": NSSWITCH}
    for name, text in files.items():
        (workdir / name).write_text(text)
    mounts = " && ".join(f"mount --bind {workdir / name} /etc/{name}" for name in files)
    script = f'{mounts} && exec "$0" -m tests.reliability.isolated'
    proc = subprocess.run(
        [unshare, "--net", "--mount", "--", "sh", "-c", script, sys.executable],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if proc.returncode != 0:
        raise IsolationUnavailable(
            f"the isolated run failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(results) != len(job["cases"]):
        raise IsolationUnavailable(f"expected {len(job['cases'])} results: {proc.stdout[-2000:]}")
    return results


# --- the child ----------------------------------------------------------------------------------


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, request)[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


class DnsServer:
    """Answers A and AAAA questions from a zone that may change between lookups (UDP only)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.zone: dict[str, list[list[str]]] = {}
        self.lookups: dict[str, int] = {}
        self.questions: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def reset(self, zone: dict[str, list[list[str]]]) -> None:
        with self.lock:
            self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}
            self.lookups = {}
            self.questions = []

    def _answers(self, name: str, qtype: int) -> list[str] | None:
        with self.lock:
            self.questions.append((name, qtype))
            rounds = self.zone.get(name)
            if rounds is None:
                return None
            if qtype == 1:  # count lookups by their A question: one per getaddrinfo call
                self.lookups[name] = self.lookups.get(name, 0) + 1
            index = max(self.lookups.get(name, 1) - 1, 0)
            addresses = rounds[min(index, len(rounds) - 1)]
        version = 4 if qtype == 1 else 6
        return [a for a in addresses if ipaddress.ip_address(a).version == version]

    def _serve(self) -> None:
        while True:
            packet, client = self.sock.recvfrom(4096)
            try:
                reply = self._reply(packet)
            except (ValueError, IndexError, struct.error):
                continue
            self.sock.sendto(reply, client)

    def _reply(self, packet: bytes) -> bytes:
        (ident,) = struct.unpack("!H", packet[:2])
        labels, pos = [], 12
        while packet[pos]:
            length = packet[pos]
            labels.append(packet[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
        qtype, _qclass = struct.unpack("!HH", packet[pos + 1 : pos + 5])
        question = packet[12 : pos + 5]
        name = ".".join(labels).lower()
        answers = self._answers(name, qtype) if qtype in (1, 28) else []
        rcode = 3 if answers is None else 0
        records = b""
        for address in answers or []:
            rdata = ipaddress.ip_address(address).packed
            records += struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(answers or []), 0, 0)
        return header + question + records


class CountingServer(TCPServer):
    """Accepts connections and closes them, counting."""

    def handle(self, conn: socket.socket) -> None:
        conn.close()


def _substitute(value: Any, ports: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{port:") and value.endswith("}"):
        return ports[value[6:-1]]
    if isinstance(value, dict):
        return {k: _substitute(v, ports) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, ports) for v in value]
    return value


async def _child(job: dict[str, Any]) -> None:
    from tests.support.faulty_servers import EchoingPostgresServer
    from warehouse_operator.probe import EgressPolicy, run_test

    dns = DnsServer()
    servers: dict[str, Any] = {}
    for name, kind in job.get("servers", {}).items():
        if kind == "count":
            servers[name] = CountingServer()
        elif kind == "echo-auth-error":
            servers[name] = EchoingPostgresServer("auth-error")
        else:
            raise ValueError(f"unknown server kind {kind!r}")
    ports = {name: server.port for name, server in servers.items()}
    for case in job["cases"]:
        dns.reset(case.get("zone", {}))
        before = {name: server.connections_accepted for name, server in servers.items()}
        policy = EgressPolicy.from_cidrs(**case["policy"]) if "policy" in case else None
        started = time.monotonic()
        result = await run_test(_substitute(case["spec"], ports), case.get("secret"), policy=policy)
        elapsed = time.monotonic() - started
        accepted = {
            name: server.connections_accepted - before[name] for name, server in servers.items()
        }
        out = {
            "id": case["id"],
            "result": result.model_dump(mode="json"),
            "elapsed": elapsed,
            "accepted": accepted,
            "ports": ports,
            "dns": dns.questions,
        }
        print(json.dumps(out), flush=True)


def main() -> None:
    job = json.loads(sys.stdin.read())
    _loopback_up()
    asyncio.run(_child(job))


if __name__ == "__main__":
    main()
