"""A TLS front for the embedded PostgreSQL, whose wheel is built without OpenSSL.

It speaks PostgreSQL's own negotiation: the client's SSLRequest is answered ``S`` and the TLS
handshake follows on the same connection (a GSSENCRequest is answered ``N`` first); a client
that starts in plain text is refused, like `hostnossl ... reject`. Decrypted bytes go to the
server unchanged. So the pipeline's clients (libpq through psycopg) negotiate TLS and verify the
certificate exactly as they would against a TLS-enabled PostgreSQL.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import threading

__all__ = ["PostgresTlsFront"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class PostgresTlsFront:
    def __init__(self, backend_port: int, context: ssl.SSLContext):
        self.backend_port = backend_port
        self.context = context
        self.port = 0
        self.refused_plain = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PostgresTlsFront:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS front did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                length, code = struct.unpack(">II", await reader.readexactly(8))
                if length == 8 and code == _GSSENC_REQUEST:
                    writer.write(b"N")
                    await writer.drain()
                    continue
                if length == 8 and code == _SSL_REQUEST:
                    writer.write(b"S")
                    await writer.drain()
                    await writer.start_tls(self.context)
                    break
                self.refused_plain += 1  # plain-text startup: refused
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        dst.close()
