"""A counting reverse proxy in front of a Kubernetes API, for the benchmark.

The operator is pointed at the proxy; the benchmark's own calls go to the API directly. The
proxy counts every request the operator makes — reads (GET/LIST), watches, writes — by verb
and resource, and serves the counts at ``GET /_counts`` (``POST /_counts/reset`` zeroes them).
Watch responses are streamed through unchanged.

    python -m bench.apiproxy --upstream http://127.0.0.1:PORT [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import signal

import aiohttp
from aiohttp import web

READY = "APIPROXY LISTENING "
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "content-encoding",
}


def classify(method: str, path: str, query: str) -> str:
    """``verb resource``: e.g. ``watch warehouseconnections``, ``patch warehouseconnections/status``."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts:
        idx = parts.index("namespaces")
        rest = parts[idx + 2 :] if len(parts) > idx + 2 else parts[idx : idx + 1]
    else:
        rest = parts[2:] if parts and parts[0] == "api" else parts[3:]
    resource = rest[0] if rest else "?"
    sub = rest[2] if len(rest) > 2 else ""
    if re.search(r"(^|&)watch=(true|1)", query):
        verb = "watch"
    elif method == "GET":
        verb = "get" if len(rest) > 1 else "list"
    else:
        verb = method.lower()
    return f"{verb} {resource}{'/' + sub if sub else ''}"


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: collections.Counter[str] = collections.Counter()
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_counts":
            return web.json_response(dict(self.counts))
        if request.path == "/_counts/reset":
            self.counts.clear()
            return web.json_response({})
        assert self.session is not None
        self.counts[classify(request.method, request.path, request.query_string)] += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers[key] = value
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch it stopped): nothing to deliver
            return response


async def serve(upstream: str, port: int) -> None:
    proxy = Proxy(upstream)
    proxy.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
    )
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{READY}{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    # open watch streams would hold a graceful shutdown for a minute
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apiproxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
