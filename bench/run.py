"""The warehouse-operator benchmark: time to status, burst, steady state, memory, isolation, restart.

The operator runs as its own process against a Kubernetes API — the local emulator by default
(behind a counting proxy, so API requests are counted at the server side), or a real cluster
with ``--kubeconfig`` — and tests a real local PostgreSQL. Results are printed as a table and
written as JSON. See bench/README.md.

    python -m bench.run                      # every scenario at full size
    python -m bench.run --smoke              # every scenario at N=50 (part of the test suite)
    python -m bench.run --only burst --burst-sizes 100,1000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.kubeapi import KubeAPIServer  # noqa: E402
from tests.support.pgserver import PostgresServer, SilentServer  # noqa: E402
from tests.support.servers import free_port, stop_process  # noqa: E402

GROUP, VERSION, PLURAL = "warehouse-operator.io", "v1alpha1", "warehouseconnections"
OPERATOR = [str(REPO / ".venv" / "bin" / "warehouse-operator")]
if not Path(OPERATOR[0]).exists():
    OPERATOR = [sys.executable, "-m", "warehouse_operator.cli"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --- the Kubernetes API, as the benchmark sees it ---------------------------------------------


class Kube:
    """Minimal async client: enough to create, list, watch, patch and delete quickly."""

    def __init__(self, server: str, headers: dict[str, str], ssl_ctx: Any) -> None:
        self.server = server.rstrip("/")
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=64),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        import ssl

        import kubernetes

        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(path), client_configuration=cfg)
        headers = {}
        token = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        ctx: Any = None
        if cfg.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            if not cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        return cls(cfg.host, headers, ctx)

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> Any:
        async with self.session.request(
            method,
            self.server + path,
            json=body,
            headers={"Content-Type": ctype} if body is not None else None,
        ) as resp:
            if resp.status == 404 and method == "DELETE":
                return None
            if resp.status >= 400:
                raise RuntimeError(
                    f"{method} {path}: HTTP {resp.status}: {(await resp.text())[:200]}"
                )
            return await resp.json(content_type=None)

    def whc_path(self, ns: str, name: str = "") -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}" + (f"/{name}" if name else "")

    async def ensure_namespace(self, ns: str) -> None:
        with contextlib.suppress(RuntimeError):
            await self.call(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )

    async def delete_namespace(self, ns: str) -> None:
        await self.call("DELETE", f"/api/v1/namespaces/{ns}")

    async def create_secret(self, ns: str, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "Opaque",
            "data": data,
        }
        await self.call("POST", f"/api/v1/namespaces/{ns}/secrets", body)

    async def create_whc(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WarehouseConnection",
            "metadata": {"name": name},
            "spec": spec,
        }
        await self.call("POST", self.whc_path(ns), body)

    async def list_whc(self, ns: str) -> list[dict[str, Any]]:
        return list((await self.call("GET", self.whc_path(ns)))["items"])

    async def watch_whc(
        self, ns: str, rv: str | None = None
    ) -> AsyncIterator[tuple[float, dict[str, Any]]]:
        query = "?watch=true&allowWatchBookmarks=false" + (f"&resourceVersion={rv}" if rv else "")
        async with self.session.get(
            self.server + self.whc_path(ns) + query,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as resp:
            async for line in resp.content:
                if line.strip():
                    yield time.monotonic(), json.loads(line)


async def bounded(items: Iterable[Any], fn: Callable[[Any], Any], limit: int = 32) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(item: Any) -> None:
        async with sem:
            await fn(item)

    await asyncio.gather(*(one(i) for i in items))


# --- the processes -----------------------------------------------------------------------------


@dataclass
class Operator:
    kubeconfig: Path
    log: Path
    metrics_port: int
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "WHC_LOG_LEVEL": "WARNING"}
        cmd = [
            *OPERATOR,
            "run",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            "0",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def _stat(self) -> list[str]:
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def settled(self, limit: float = 60.0) -> float:
        """Wait until the operator is idle (under 2 % of a core for a second, e.g. done with the
        echoes of its last writes); the seconds that took."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            cpu0 = self.cpu_seconds()
            await asyncio.sleep(1.0)
            if self.cpu_seconds() - cpu0 < 0.02:
                break
        return round(time.monotonic() - started, 1)

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Until its metrics port answers (start-up imports take a while on a busy machine)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.metrics(session)
                return
            except aiohttp.ClientError:
                if time.monotonic() > deadline or (
                    self.process is not None and self.process.poll() is not None
                ):
                    raise
                await asyncio.sleep(0.2)

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        async with session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (
                    "warehouse_connection_tests_total",
                    "warehouse_connection_tests_in_progress",
                ):
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
                if sample.name == "warehouse_connection_tests_total":
                    key = f"reason:{sample.labels.get('reason')}"
                    out[key] = out.get(key, 0.0) + sample.value
        return out


def cpu_seconds_of(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (and its reaped children), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds of every postgres process now running (the bench's server only, in CI)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(entry, "comm").read_text().strip() == "postgres":
                    total += cpu_seconds_of(int(entry.name)) or 0.0
            except OSError:
                continue
    return total


def _tested_this_generation(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = obj.get("metadata", {}).get("generation")
    return bool(status.get("lastTestedAt")) and (
        generation is None or status.get("observedGeneration") == generation
    )


async def tested_after_stamp() -> str:
    """A ``lastTestedAt`` value that only tests from now on reach (it has one-second resolution:
    a second and a half is waited out first)."""
    await asyncio.sleep(1.5)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="whc-bench-"))
        self.results: dict[str, Any] = {}
        self.api_server: KubeAPIServer | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_url = ""
        self.http = aiohttp.ClientSession()
        self.last_wait: dict[str, Any] = {}

    # setup / teardown
    def start(self) -> None:
        self.pg = PostgresServer(tls="off").start()
        if self.args.kubeconfig:
            self.kube_direct = Kube.from_kubeconfig(Path(self.args.kubeconfig))
            self.operator_kubeconfig = Path(self.args.kubeconfig)
            self.counted_kubeconfig = self.operator_kubeconfig
            return
        self.api_server = KubeAPIServer(workdir=self.tmp).start()
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "bench.apiproxy", "--upstream", self.api_server.url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proxy.stdout is not None
        line = self.proxy.stdout.readline().decode()
        self.proxy_url = f"http://127.0.0.1:{int(line.split()[-1])}"
        self.operator_kubeconfig = self.api_server.write_kubeconfig(self.tmp / "kubeconfig")
        self.counted_kubeconfig = self.tmp / "counted-kubeconfig"
        kc = self.api_server.kubeconfig()
        kc["clusters"][0]["cluster"]["server"] = self.proxy_url
        self.counted_kubeconfig.write_text(yaml.safe_dump(kc))
        self.kube_direct = Kube(self.api_server.url, {}, None)

    async def stop(self) -> None:
        await self.kube_direct.close()
        await self.http.close()
        if self.proxy is not None:
            stop_process(self.proxy, 10)
        if self.api_server is not None:
            self.api_server.close()
        self.pg.stop()

    async def operator(self, *extra: str, counted: bool = False) -> Operator:
        """The operator, talking to the API directly, or through the counting proxy when
        ``counted`` (the proxy is measuring equipment: a hop and a process of its own, so only
        the scenario that reports request counts pays for it)."""
        kubeconfig = self.counted_kubeconfig if counted else self.operator_kubeconfig
        op = Operator(kubeconfig, self.tmp / "operator.log", free_port(), list(extra))
        op.start()
        await op.wait_ready(self.http)
        return op

    def peer_cpu(self) -> dict[str, float | None]:
        """CPU seconds used so far by the other processes on this machine's two cores."""
        emulator = (
            self.api_server._process.pid
            if self.api_server is not None and self.api_server._process
            else None
        )
        return {
            "api_emulator": cpu_seconds_of(emulator),
            "api_proxy": cpu_seconds_of(self.proxy.pid if self.proxy is not None else None),
            "postgres": postgres_cpu_seconds(),
            "benchmark": sum(os.times()[:2]),  # this process: the creations and the watch
        }

    async def api_counts(self) -> dict[str, int]:
        if not self.proxy_url:
            return {}
        async with self.http.get(self.proxy_url + "/_counts") as resp:
            return dict(await resp.json())

    async def reset_counts(self) -> None:
        if self.proxy_url:
            async with self.http.post(self.proxy_url + "/_counts/reset"):
                pass

    async def connect_pg(self) -> Any:
        """A session of the benchmark's own at the benchmark's PostgreSQL."""
        import psycopg

        return await psycopg.AsyncConnection.connect(
            host=self.pg.host,
            port=self.pg.port,
            dbname=self.pg.database,
            user=self.pg.user,
            password=self.pg.password,
            sslmode="disable",
            autocommit=True,
        )

    # objects
    def pg_spec(
        self,
        interval: str = "1h",
        host: str | None = None,
        port: int | None = None,
        timeout: str = "10s",
    ) -> dict[str, Any]:
        return {
            "provider": "postgres",
            "credentialsSecretRef": {"name": "pg"},
            "postgres": {
                "host": host or self.pg.host,
                "port": port or self.pg.port,
                "database": self.pg.database,
                "sslMode": "disable",
            },
            "testInterval": interval,
            "testTimeout": timeout,
        }

    async def namespace(self, prefix: str) -> str:
        ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
        await self.kube_direct.ensure_namespace(ns)
        await self.kube_direct.create_secret(ns, "pg", self.pg.secret_data())
        return ns

    async def wait_all(
        self, ns: str, names: set[str], predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> float:
        """Until every named object satisfies ``predicate``: a watch, and a list when the watch
        ended or once a minute in case it missed something (a list of thousands of objects is
        work for the API server, taken from the processes being measured)."""
        started = time.monotonic()
        done: set[str] = set()
        finished = asyncio.Event()
        seen: dict[str, Any] = {"watch": 0, "list": 0, "watch_restarts": 0, "tenths_s": []}
        versions: dict[str, tuple[int, str]] = {}
        regressions: list[str] = []

        def see(obj: dict[str, Any], via: str) -> None:
            name = obj.get("metadata", {}).get("name")
            if name in names:
                rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                phase = str((obj.get("status") or {}).get("phase"))
                last = versions.get(name)
                if last is not None and rv < last[0]:
                    # older than what was already seen: the emulator's list has been seen to
                    # return superseded versions under load (recorded, never believed)
                    regressions.append(f"{via} {name}: rv {last[0]} {last[1]} -> rv {rv} {phase}")
                    return
                versions[name] = (rv, phase)
                if predicate(obj):
                    if name not in done:
                        seen[via] += 1  # which of the two saw it done first
                        done.add(name)
                        if len(done) * 10 >= len(names) * (len(seen["tenths_s"]) + 1):
                            # when each tenth was done: shows a stall apart from a slow pace
                            seen["tenths_s"].append(round(time.monotonic() - started, 1))
                else:
                    done.discard(name)
                if len(done) == len(names):
                    finished.set()

        async def watch() -> None:
            with contextlib.suppress(aiohttp.ClientError):
                async for _, event in self.kube_direct.watch_whc(ns):
                    see(event.get("object") or {}, "watch")

        watcher = asyncio.create_task(watch())
        listed = time.monotonic()
        try:
            while time.monotonic() - started < timeout:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), 5.0)
                    return time.monotonic() - started
                if watcher.done() or time.monotonic() - listed > 60:
                    if watcher.done():
                        seen["watch_restarts"] += 1
                        watcher = asyncio.create_task(watch())
                    listed = time.monotonic()
                    for obj in await self.kube_direct.list_whc(ns):
                        see(obj, "list")
                if finished.is_set():
                    return time.monotonic() - started
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.last_wait = seen | (
                {"stale_versions_ignored": len(regressions), "examples": regressions[:3]}
                if regressions
                else {}
            )
        raise TimeoutError(
            f"{len(names) - len(done)} of {len(names)} objects in {ns} not done within {timeout}s"
        )

    async def timed_creations(
        self, ns: str, specs: dict[str, dict[str, Any]], limit: int = 32
    ) -> dict[str, float]:
        """Create objects at once; per object, the seconds from its create call to Connected."""
        created: dict[str, float] = {}
        connected: dict[str, float] = {}
        ready = asyncio.Event()

        async def watch() -> None:
            async for at, event in self.kube_direct.watch_whc(ns):
                ready.set()
                obj = event.get("object") or {}
                name = obj.get("metadata", {}).get("name")
                if (
                    name in specs
                    and name not in connected
                    and (obj.get("status") or {}).get("phase") == "Connected"
                ):
                    connected[name] = at
                    if len(connected) == sum(1 for n in specs if not n.startswith("silent")):
                        return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)

        async def create(name: str) -> None:
            created[name] = time.monotonic()
            await self.kube_direct.create_whc(ns, name, specs[name])

        await bounded(list(specs), create, limit)
        await asyncio.wait_for(watcher, timeout=max(120, len(specs) / 10))
        return {n: connected[n] - created[n] for n in connected}

    # --- scenarios -----------------------------------------------------------------------------

    async def time_to_status(self, samples: int) -> None:
        op = await self.operator()
        try:
            ns = await self.namespace("tts")
            await asyncio.sleep(2)
            overheads, totals, raws, raw_cpu = [], [], [], []
            for i in range(samples):
                name = f"tts-{i}"
                tts = await self.timed_creations(ns, {name: self.pg_spec()})
                total = tts[name]
                # the raw cost of the same work, by hand: connect + query, one status PATCH
                t0, cpu0 = time.monotonic(), sum(os.times()[:2])
                conn = await self.connect_pg()
                await (await conn.execute("SELECT 1")).fetchone()
                await conn.close()
                await self.kube_direct.call(
                    "PATCH",
                    self.kube_direct.whc_path(ns, name) + "/status",
                    {"status": {"message": "raw-cost probe"}},
                    "application/merge-patch+json",
                )
                raw = time.monotonic() - t0
                raw_cpu.append(sum(os.times()[:2]) - cpu0)
                totals.append(total)
                raws.append(raw)
                overheads.append(total - raw)
            self.results["time_to_status"] = {
                "samples": samples,
                "time_to_status_ms": {"p50": ms(pct(totals, 50)), "p99": ms(pct(totals, 99))},
                "raw_cost_ms": {"p50": ms(pct(raws, 50)), "p99": ms(pct(raws, 99))},
                "overhead_ms": {"p50": ms(pct(overheads, 50)), "p99": ms(pct(overheads, 99))},
                # the operator's first test after it started also imports the provider's driver
                "first_after_start_ms": {
                    "time_to_status": ms(totals[0]),
                    "overhead": ms(overheads[0]),
                },
                "overhead_after_first_ms": {
                    "p50": ms(pct(overheads[1:], 50)),
                    "p99": ms(pct(overheads[1:], 99)),
                },
                # what the client side of one raw test costs in CPU (psycopg/libpq: SCRAM)
                "raw_cost_client_cpu_ms": {"mean": ms(statistics.fmean(raw_cpu))},
                "overhead_samples_ms": [ms(x) for x in overheads],
            }
            await self.kube_direct.delete_namespace(ns)
        finally:
            op.stop()

    async def burst(self, sizes: list[int], concurrency: int) -> None:
        out = {}
        for n in sizes:
            op = await self.operator("--max-concurrent-tests", str(concurrency))
            try:
                ns = await self.namespace(f"burst{n}")
                await asyncio.sleep(2)
                before = await op.metrics(self.http)
                peers0, cpu0 = self.peer_cpu(), op.cpu_seconds()
                t0 = time.monotonic()
                names = [f"b-{i}" for i in range(n)]
                await bounded(
                    names,
                    lambda name, ns=ns: self.kube_direct.create_whc(ns, name, self.pg_spec()),
                    32,
                )
                creation = time.monotonic() - t0
                elapsed = await self.wait_all(
                    ns,
                    set(names),
                    lambda o: (o.get("status") or {}).get("phase") == "Connected",
                    timeout=max(120.0, n / 5),
                )
                total = time.monotonic() - t0
                after = await op.metrics(self.http)
                latencies = [
                    float(o["status"]["latencyMs"])
                    for o in await self.kube_direct.list_whc(ns)
                    if (o.get("status") or {}).get("latencyMs") is not None
                ]
                tests = after.get("warehouse_connection_tests_total", 0) - before.get(
                    "warehouse_connection_tests_total", 0
                )
                out[str(n)] = {
                    "all_connected_s": round(total, 2),
                    "creating_took_s": round(creation, 2),
                    "after_last_create_s": round(elapsed, 2),
                    "tests": int(tests),
                    "tests_per_s": round(tests / total, 1),
                    "reasons": {
                        k.removeprefix("reason:"): int(v - before.get(k, 0))
                        for k, v in after.items()
                        if k.startswith("reason:") and v - before.get(k, 0)
                    },
                    "concurrency_limit": concurrency,
                    "seen_done_by": self.last_wait,
                    # connect + query as the operator timed it (status.latencyMs)
                    "test_latency_ms": {
                        "p50": round(pct(latencies, 50)),
                        "p99": round(pct(latencies, 99)),
                    },
                    "operator_cpu_s": round(op.cpu_seconds() - cpu0, 2),
                    "peer_cpu_s": {
                        k: round(v - (peers0[k] or 0), 2) if v is not None else None
                        for k, v in self.peer_cpu().items()
                    },
                }
                await self.kube_direct.delete_namespace(ns)
            finally:
                op.stop()
        self.results["burst"] = out

    async def steady(self, n: int, interval: str, window: float) -> None:
        op = await self.operator(counted=True)
        try:
            ns = await self.namespace("steady")
            await asyncio.sleep(2)
            names = [f"s-{i}" for i in range(n)]
            await bounded(
                names,
                lambda name: self.kube_direct.create_whc(ns, name, self.pg_spec(interval=interval)),
            )
            await self.wait_all(
                ns,
                set(names),
                lambda o: (o.get("status") or {}).get("phase") == "Connected",
                timeout=300,
            )
            await asyncio.sleep(1)
            m0, cpu0 = await op.metrics(self.http), op.cpu_seconds()
            await self.reset_counts()
            await asyncio.sleep(window)
            counts = await self.api_counts()
            m1, cpu1 = await op.metrics(self.http), op.cpu_seconds()
            tests = m1.get("warehouse_connection_tests_total", 0) - m0.get(
                "warehouse_connection_tests_total", 0
            )
            writes = sum(
                v for k, v in counts.items() if k.split()[0] in ("patch", "post", "put", "delete")
            )
            reads = sum(v for k, v in counts.items() if k.split()[0] in ("get", "list"))
            self.results["steady"] = {
                "connections": n,
                "interval": interval,
                "window_s": window,
                "tests": int(tests),
                "tests_per_s": round(tests / window, 1),
                "cpu_s_per_1000_tests": round((cpu1 - cpu0) / tests * 1000, 2) if tests else None,
                "api_writes_per_test": round(writes / tests, 3) if tests and counts else None,
                "api_reads_per_test": round(reads / tests, 3) if tests and counts else None,
                "api_requests": counts,
            }
            # nothing due: with a long interval, nothing may be written at all
            await bounded(
                names,
                lambda name: self.kube_direct.call(
                    "PATCH",
                    self.kube_direct.whc_path(ns, name),
                    {"spec": {"testInterval": "1h"}},
                    "application/merge-patch+json",
                ),
            )
            await self.wait_all(ns, set(names), _tested_this_generation, timeout=300)
            await asyncio.sleep(1)
            await self.reset_counts()
            quiet = min(window, 20.0)
            await asyncio.sleep(quiet)
            idle = await self.api_counts()
            self.results["steady"]["idle_window_s"] = quiet
            self.results["steady"]["idle_api_writes"] = (
                sum(
                    v for k, v in idle.items() if k.split()[0] in ("patch", "post", "put", "delete")
                )
                if self.proxy_url
                else None
            )
            self.results["steady"]["idle_api_requests"] = idle
            await self.kube_direct.delete_namespace(ns)
        finally:
            op.stop()

    async def memory(self, sizes: list[int], secrets: int, secret_kb: int) -> None:
        op = await self.operator()
        out: dict[str, Any] = {}
        settle: dict[str, float] = {}  # seconds until the operator was idle, before each reading
        try:
            settle["0"] = await op.settled()
            out["0"] = op.rss_mb()
            ns = await self.namespace("mem")
            have = 0
            for n in sizes:
                names = [f"m-{i}" for i in range(have, n)]
                await bounded(
                    names, lambda name: self.kube_direct.create_whc(ns, name, self.pg_spec())
                )
                have = n
                # every one tested (not merely Pending): its status is what the operator keeps
                await self.wait_all(
                    ns,
                    {f"m-{i}" for i in range(n)},
                    lambda o: (o.get("status") or {}).get("phase") == "Connected",
                    timeout=max(300.0, n / 5),
                )
                settle[str(n)] = await op.settled()
                out[str(n)] = op.rss_mb()
            blob = base64.b64encode(os.urandom(secret_kb * 1024 * 3 // 4)).decode()
            await bounded(
                range(secrets),
                lambda i: self.kube_direct.create_secret(
                    ns, f"helm-release-{i}", {"release": blob}
                ),
                16,
            )
            settle["secrets"] = await op.settled()
            out[f"{have}+{secrets}x{secret_kb}KB secrets"] = op.rss_mb()
            # the same, for an operator that starts with all of it already there (its first
            # list of Secrets carries every one of them)
            op.stop()
            stamp = await tested_after_stamp()
            op = await self.operator()
            # every connection listed and tested again by the new process (idle alone is not
            # enough: an operator that has not listed anything yet is idle too)
            await self.wait_all(
                ns,
                {f"m-{i}" for i in range(have)},
                lambda o: (o.get("status") or {}).get("lastTestedAt", "") >= stamp,
                timeout=900,
            )
            settle["restart"] = await op.settled()
            out[f"{have}+{secrets}x{secret_kb}KB secrets, after a restart"] = op.rss_mb()
            await self.kube_direct.delete_namespace(ns)
        finally:
            op.stop()
        self.results["memory"] = {"rss_mb": out, "idle_after_s": settle}

    async def isolation(self, n: int) -> None:
        silent = SilentServer()
        op = await self.operator()
        try:
            await asyncio.sleep(2)
            base_ns = await self.namespace("iso-base")
            base = await self.timed_creations(base_ns, {f"h-{i}": self.pg_spec() for i in range(n)})
            await self.kube_direct.delete_namespace(base_ns)
            mixed_ns = await self.namespace("iso-mixed")
            specs: dict[str, dict[str, Any]] = {}
            for i in range(n):
                specs[f"silent-{i}"] = self.pg_spec(host="127.0.0.1", port=silent.port)
                specs[f"h-{i}"] = self.pg_spec()
            mixed = await self.timed_creations(mixed_ns, specs)
            healthy = [v for k, v in mixed.items() if k.startswith("h-")]
            b50, m50 = pct(list(base.values()), 50), pct(healthy, 50)
            self.results["isolation"] = {
                "healthy": n,
                "silent": n,
                "healthy_alone_ms": {"p50": ms(b50), "p99": ms(pct(list(base.values()), 99))},
                "healthy_beside_silent_ms": {"p50": ms(m50), "p99": ms(pct(healthy, 99))},
                "p50_change_pct": round((m50 - b50) / b50 * 100, 1) if b50 else None,
            }
            await self.kube_direct.delete_namespace(mixed_ns)
        finally:
            op.stop()
            silent.stop()

    async def restart(self, n: int, spread: str) -> None:
        op = await self.operator()
        ns = await self.namespace("restart")
        try:
            await asyncio.sleep(2)
            names = [f"r-{i}" for i in range(n)]
            await bounded(
                names,
                lambda name: self.kube_direct.create_whc(ns, name, self.pg_spec(interval="1h")),
            )
            await self.wait_all(
                ns,
                set(names),
                lambda o: (o.get("status") or {}).get("phase") == "Connected",
                timeout=max(300.0, n / 5),
            )
        finally:
            op.stop()
        stamp = await tested_after_stamp()
        op = await self.operator("--startup-spread", spread)
        samples: list[int] = []
        stop = asyncio.Event()

        async def sample_backend() -> None:
            # concurrent tests seen by the database itself: its sessions from the operator
            conn = await self.connect_pg()
            try:
                while not stop.is_set():
                    cur = await conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warehouse-operator'"
                    )
                    row = await cur.fetchone()
                    samples.append(int(row[0]) if row else 0)
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()

        sampler = asyncio.create_task(sample_backend())
        try:
            took = await self.wait_all(
                ns,
                set(names),
                lambda o: (o.get("status") or {}).get("lastTestedAt", "") >= stamp,
                timeout=600,
            )
        finally:
            stop.set()
            await sampler
            op.stop()
        self.results["restart"] = {
            "connections": n,
            "startup_spread": spread,
            "all_reverified_s": round(took, 2),
            "peak_concurrent_backend_sessions": max(samples) if samples else 0,
            "mean_concurrent_backend_sessions": round(statistics.fmean(samples), 1)
            if samples
            else 0,
            "backend_samples": len(samples),
            "seen_done_by": self.last_wait,
        }
        await self.kube_direct.delete_namespace(ns)


SCENARIOS = ("time_to_status", "burst", "steady", "memory", "isolation", "restart")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    bench.start()
    try:
        only = set(args.only.split(",")) if args.only else set(SCENARIOS)
        n = args.smoke_n if args.smoke else None
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("time_to_status", lambda: bench.time_to_status(10 if n else args.samples)),
            (
                "burst",
                lambda: bench.burst(
                    [n] if n else [int(x) for x in args.burst_sizes.split(",")], args.concurrency
                ),
            ),
            (
                "steady",
                lambda: bench.steady(
                    n or args.steady_n,
                    "2s" if n else args.steady_interval,
                    5.0 if n else args.window,
                ),
            ),
            (
                "memory",
                lambda: bench.memory(
                    [n] if n else [int(x) for x in args.memory_sizes.split(",")],
                    20 if n else args.secrets,
                    100,
                ),
            ),
            ("isolation", lambda: bench.isolation(n or 100)),
            (
                "restart",
                lambda: bench.restart(n or args.restart_n, "2s" if n else args.startup_spread),
            ),
        ]
        for name, step in steps:
            if name in only:
                t0 = time.monotonic()
                print(f"== {name} ...", file=sys.stderr, flush=True)
                await step()
                print(
                    f"   {name} done in {time.monotonic() - t0:.1f}s: {json.dumps(bench.results.get(name))}",
                    file=sys.stderr,
                    flush=True,
                )
        bench.results["machine"] = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "api": "real cluster" if args.kubeconfig else "emulator",
        }
        return bench.results
    finally:
        await bench.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="every scenario at a small size")
    parser.add_argument("--smoke-n", type=int, default=50)
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}"
    )
    parser.add_argument("--kubeconfig", default="", help="a real cluster instead of the emulator")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--burst-sizes", default="100,1000,5000")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--steady-n", type=int, default=1000)
    parser.add_argument("--steady-interval", default="30s")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--memory-sizes", default="1000,10000")
    parser.add_argument("--secrets", type=int, default=2000)
    parser.add_argument("--restart-n", type=int, default=5000)
    parser.add_argument("--startup-spread", default="30s")
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
