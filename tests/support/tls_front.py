"""An https front for a plain-http test server on 127.0.0.1, as an API server is seen in a Pod.

``TLSFront(target_port, cert_pem, key_pem)`` terminates TLS on ``localhost:<port>`` with the
given certificate and forwards the bytes to ``127.0.0.1:<target_port>``. It notes the bearer
tokens it sees in request headers (``tokens``), so a test can tell which credentials a client
sent without the backend checking any.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import tempfile
import threading
from pathlib import Path

from tests.support.servers import LOCALHOST, Managed

_BEARER = re.compile(rb"\r\nauthorization: bearer (\S+)\r\n", re.IGNORECASE)


class TLSFront(Managed):
    def __init__(self, target_port: int, cert_pem: bytes, key_pem: bytes) -> None:
        self.target_port = target_port
        self.tokens: set[str] = set()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="whc-tls-front-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            context.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tls-front", daemon=True
        )
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, LOCALHOST, 0, ssl=context), self._loop
        ).result(timeout=10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(LOCALHOST, self.target_port), timeout=10
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer, note=True),
            self._pump(up_reader, writer, note=False),
        )

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, note: bool
    ) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await src.read(65536):
                if note:
                    self.tokens.update(m.decode() for m in _BEARER.findall(data))
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            dst.close()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
