"""A loopback TCP proxy a test can cut and close, to fake a server's outage or restart.

Tests run on a shared machine: stopping the real MariaDB or RabbitMQ would break every other
test run there. Put a proxy in front instead, and the clients see exactly what an outage or
a restart shows them (open connections reset, new ones refused) while the server stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class TcpProxy:
    """Forwards connections on a loopback port to `upstream_host:upstream_port`."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5672) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.cuts = 0
        self.refusals = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        """Listen (on `port`, else a free one)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def refusing(self) -> bool:
        """True while nothing listens on the port (connections are refused)."""
        return self._server is None

    def cut(self) -> None:
        """Drop every open connection (new ones are still accepted)."""
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def refuse(self) -> None:
        """What a stopped server looks like: open connections reset, new ones refused."""
        self.refusals += 1
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop listening first, so nothing slips in between
        self.cut()
        if server is not None:
            await server.wait_closed()

    async def accept(self) -> None:
        """The server is back: listen again on the same port."""
        if self._server is None:
            await self.start(self.port)

    async def stop(self) -> None:
        """Close everything."""
        await self.refuse()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()  # the upstream itself refuses: so do we
            self._writers.discard(writer)
            return
        if writer not in self._writers:  # cut while we were connecting upstream
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(CHUNK):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.difference_update({writer, up_writer})


class LoopThread:
    """An event loop in a daemon thread, so synchronous code can drive async objects."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxy-loop", daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout)

    def call(self, function: Any, *args: Any) -> None:
        """Call a plain function on the loop's thread (and wait until it ran)."""

        async def call() -> None:
            function(*args)

        self.run(call())

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


@contextlib.contextmanager
def proxies_in_thread(*upstreams: tuple[str, int]) -> Iterator[tuple[LoopThread, list[TcpProxy]]]:
    """One started proxy per upstream, served by a loop in a background thread; closed after."""
    thread = LoopThread()
    started: list[TcpProxy] = []
    try:
        for host, port in upstreams:
            proxy = TcpProxy(host, port)
            thread.run(proxy.start())
            started.append(proxy)
        yield thread, started
    finally:
        for proxy in started:
            with contextlib.suppress(Exception):
                thread.run(proxy.stop(), timeout=10)
        thread.close()
