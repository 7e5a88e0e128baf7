"""An HTTPS front for a local server: TLS terminated here, bytes relayed to the plain upstream.

What a gateway's HTTPS listener does for clients, so `smoke`/`bench --ca-file` can be tested
against a real vLLM behind a certificate from a private CA. Counts the TLS connections it
accepted (a refused input must have made none).
"""
from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from urllib.parse import urlparse

from lightrail.testing.vllm import free_port


class TlsFront:
    """`with TlsFront("http://127.0.0.1:8000", cert_dir) as front: front.url` (cert_dir: tls.crt, tls.key)."""

    def __init__(self, upstream: str, cert_dir: Path):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(Path(cert_dir) / "tls.crt", Path(cert_dir) / "tls.key")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "TlsFront":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", self.port, ssl=self.context), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _connection(self, client_reader, client_writer) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
