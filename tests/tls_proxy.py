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
        self._tasks: set[asyncio.Task[None]] = set()
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
        # A front still stopping after the test goes on closes its connections under the next
        # test, whose setup then fails on the unclosed sockets the garbage collector reports.
        if self._thread.is_alive() and exc[0] is None:
            raise RuntimeError("the TLS front did not stop within 10 s (clients still connected to it?)")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        # Every connection is closed, the ones whose handler never got to run included (clients still
        # connecting as the front stops): a socket left open is reported by the garbage collector in
        # whichever test runs next. The loop's own accept tasks finish first (cancelled, they would
        # drop an accepted socket unclosed); then the handlers stop and every transport is aborted.
        internal = asyncio.all_tasks() - {asyncio.current_task()} - self._tasks
        if internal:
            await asyncio.wait(internal, timeout=5)
        while pending := [t for t in self._tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)  # an aborted transport closes its socket on the loop's next turn
        await server.wait_closed()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Known from the moment it is accepted, before its handler runs."""
        self._writers.add(writer)
        self._tasks.add(asyncio.get_running_loop().create_task(self._client(reader, writer)))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
